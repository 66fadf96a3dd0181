/**
 * Property: for random domain XML shapes (indentation, quote style, line ends, comments, other
 * applications' metadata, hand-added hostdevs, empty or missing `<devices>`, one-line documents)
 * and random sets of hostdevs, `editDomainXml()` is lossless outside the hostdevs it manages and
 * idempotent. Seeded; set `PASSTHROUGH_PROPERTY_SEED` to replay a failure (the seed is printed).
 */

import fc from "fast-check";
import { assertEquals } from "../helpers/assert.ts";
import { editDomainXml, parseDomainXml } from "../../lib/domain/domain_xml.ts";
import type { DeviceIdentity, HostdevSpec } from "../../lib/plan/types.ts";
import { pciAddressFromParts, pciAddressToLibvirt } from "../../lib/pci/address.ts";
import { recordCase } from "../../scripts/reliability_report.ts";
import { gpuIdentity } from "../helpers/devices.ts";

const TEST = "tests/domain/property_domain_xml_test.ts";
const SEED = Number(Deno.env.get("PASSTHROUGH_PROPERTY_SEED") ?? "20261124");
const RUNS = 200;

function escapeText(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

const address = fc.record({
  domain: fc.constantFrom(0, 1),
  bus: fc.integer({ min: 0, max: 255 }),
  slot: fc.integer({ min: 0, max: 31 }),
  function: fc.integer({ min: 0, max: 7 }),
}).map(pciAddressFromParts);

/** One element of `<devices>` as text, given the quote and the inner indent. */
type Piece = (q: string, nl: string, ind: string) => string;

function hostdevXml(addr: string, managed: boolean): Piece {
  const a = pciAddressToLibvirt(addr);
  return (q, nl, ind) =>
    `<hostdev mode=${q}subsystem${q} type=${q}pci${q} managed=${q}${
      managed ? "yes" : "no"
    }${q}>${nl}${ind}${ind}<source>${nl}${ind}${ind}${ind}<address domain=${q}${a.domain}${q} bus=${q}${a.bus}${q} slot=${q}${a.slot}${q} function=${q}${a.function}${q}/>${nl}${ind}${ind}</source>${nl}${ind}</hostdev>`;
}

const otherDevice: fc.Arbitrary<Piece> = fc.constantFrom<Piece>(
  (q) =>
    `<disk type=${q}file${q} device=${q}disk${q}><source file=${q}/a b&amp;c.img${q}/><target dev=${q}vda${q}/></disk>`,
  (q) => `<interface type=${q}network${q}><source network=${q}default${q}/></interface>`,
  (q) => `<graphics type=${q}vnc${q} passwd=${q}s3&lt;cret${q}/>`,
  (q) =>
    `<hostdev mode=${q}subsystem${q} type=${q}usb${q}><source><vendor id=${q}0x1234${q}/><product id=${q}0x5678${q}/></source></hostdev>`,
  () => `<!-- a comment with <hostdev> inside -->`,
  (q) => `<controller type=${q}pci${q} index=${q}0${q} model=${q}pcie-root${q}/>`,
);

const shape = fc.record({
  indent: fc.constantFrom("  ", "    ", "\t", " "),
  newline: fc.constantFrom("\n", "\r\n", ""),
  quote: fc.constantFrom("'", '"'),
  name: fc.stringMatching(/^[a-z][a-z0-9_.-]{0,12}$/),
  uuid: fc.option(fc.uuid(), { nil: undefined }),
  description: fc.option(fc.string({ maxLength: 30 }), { nil: undefined }),
  prolog: fc.constantFrom("", "<?xml version='1.0'?>\n", "<!-- prolog -->\n"),
  otherMetadata: fc.boolean(),
  devices: fc.constantFrom("list", "empty-element", "missing"),
  others: fc.array(otherDevice, { maxLength: 4 }),
  handAdded: fc.uniqueArray(fc.record({ address, managed: fc.boolean() }), {
    maxLength: 3,
    selector: (h) => h.address,
  }),
  trailingComment: fc.boolean(),
});

type Shape = typeof shape extends fc.Arbitrary<infer T> ? T : never;

function domainXml(s: Shape): string {
  const nl = s.newline;
  const ind = nl === "" ? "" : s.indent;
  const q = s.quote;
  const lines: string[] = [`<domain type=${q}kvm${q}>`];
  lines.push(`${ind}<name>${s.name}</name>`);
  if (s.uuid !== undefined) lines.push(`${ind}<uuid>${s.uuid}</uuid>`);
  if (s.description !== undefined) {
    // Control characters other than tab, CR and LF are not XML characters at all.
    // deno-lint-ignore no-control-regex
    const text = s.description.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, "");
    lines.push(`${ind}<description>${escapeText(text)}</description>`);
  }
  if (s.otherMetadata) {
    lines.push(
      `${ind}<metadata>${nl}${ind}${ind}<app:info xmlns:app=${q}urn:other:app${q}>keep &amp; me</app:info>${nl}${ind}</metadata>`,
    );
  }
  lines.push(`${ind}<memory unit=${q}KiB${q}>1048576</memory>`);
  lines.push(`${ind}<os><type arch=${q}x86_64${q}>hvm</type></os>`);
  const pieces = [
    ...s.others,
    ...s.handAdded.map((h) => hostdevXml(h.address, h.managed)),
  ].map((p) => `${ind}${ind}${p(q, nl, ind + ind)}`);
  if (s.devices === "list") {
    lines.push(`${ind}<devices>`, ...pieces, `${ind}</devices>`);
  } else if (s.devices === "empty-element") {
    lines.push(`${ind}<devices/>`);
  }
  if (s.trailingComment) lines.push(`${ind}<!-- trailing -->`);
  lines.push("</domain>");
  return s.prolog + lines.join(nl) + nl;
}

function record(addr: string, rule: string): DeviceIdentity {
  return gpuIdentity(addr, { rule });
}

function check(property: fc.IPropertyWithHooks<[Shape, ...unknown[]]> | fc.IProperty<never>) {
  const details = fc.check(property as fc.IProperty<unknown[]>, { seed: SEED, numRuns: RUNS });
  if (details.failed) {
    throw new Error(
      `Property failed with PASSTHROUGH_PROPERTY_SEED=${SEED} (path ${details.counterexamplePath}): ${
        fc.stringify(details.counterexample)
      }: ${details.errorInstance}`,
    );
  }
}

Deno.test("editDomainXml() on random domains: add then remove is lossless, re-editing is idempotent", () => {
  let runs = 0;
  check(fc.property(
    shape,
    fc.uniqueArray(
      fc.record({
        address,
        managed: fc.boolean(),
        bar: fc.constantFrom(undefined, "on", "off"),
        boot: fc.option(fc.integer({ min: 1, max: 9 }), { nil: undefined }),
        romFile: fc.option(fc.constantFrom("/a'b\"<c>&d.rom", "/x y.rom"), { nil: undefined }),
      }),
      { minLength: 1, maxLength: 4, selector: (a) => a.address },
    ),
    (s, adds) => {
      runs++;
      const xml = domainXml(s);
      const before = parseDomainXml(xml);
      assertEquals(before.name, s.name);
      const written = s.devices === "list" ? s.handAdded : [];
      assertEquals(before.hostdevs.map((h) => h.address), written.map((h) => h.address));
      const hand = new Set(before.hostdevs.map((h) => h.address));
      const fresh = adds.filter((a) => !hand.has(a.address));
      const specs: HostdevSpec[] = fresh.map((a, i) => {
        const spec: HostdevSpec = { address: a.address, managed: a.managed };
        if (a.bar !== undefined || a.romFile !== undefined) {
          spec.rom = {
            ...(a.bar !== undefined ? { bar: a.bar as "on" | "off" } : {}),
            ...(a.romFile !== undefined ? { file: a.romFile } : {}),
          };
        }
        if (a.boot !== undefined && i === 0) spec.bootOrder = a.boot;
        return spec;
      });
      const records = fresh.map((a, i) => record(a.address, `rule-${i}`));
      const edited = editDomainXml(xml, { remove: [], add: specs, records });
      const after = parseDomainXml(edited);
      // Managed hostdevs are exactly the added ones; hand-added ones keep their exact text.
      assertEquals(
        after.hostdevs.filter((h) => h.owned).map((h) => h.address).sort(),
        fresh.map((a) => a.address).sort(),
      );
      assertEquals(
        after.hostdevs.filter((h) => !h.owned).map((h) => h.xml),
        before.hostdevs.map((h) => h.xml),
      );
      assertEquals(after.records, records);
      assertEquals([after.name, after.uuid], [before.name, before.uuid]);
      // Idempotent: the same desired state again changes nothing.
      assertEquals(editDomainXml(edited, { remove: [], add: [], records }), edited);
      // Lossless: removing what was added gives back the original, byte for byte.
      assertEquals(
        editDomainXml(edited, { remove: fresh.map((a) => a.address), add: [], records: [] }),
        xml,
      );
    },
  ));
  recordCase({
    area: "property",
    name: "random domain XML shapes x random hostdev sets: lossless and idempotent edits",
    count: runs,
    outcome: "held",
    test: TEST,
  });
});
