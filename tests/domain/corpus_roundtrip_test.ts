/**
 * The round-trip law over libvirt's own test domains (`../shared/libvirt-domains/`, 409 files):
 *
 *     editDomainXml(editDomainXml(x, add one managed hostdev + its record), remove it + records []) === x
 *
 * byte for byte. Byte equality is the right bar because the tool defines the text it produces:
 * anything short of it (a changed quote, a re-indented line, a dropped comment or namespace
 * prefix) would show up in every diff the user confirms and silently rewrite parts of the
 * definition the tool does not own. Also: an edit with nothing to do returns `x` itself, and the
 * edited document validates against libvirt's schema whenever the original does.
 *
 * Reads the shared corpus, so it is skipped when that folder is absent (a fresh clone).
 */
import { assertEquals } from "../helpers/assert.ts";
import { editDomainXml, parseDomainXml } from "../../lib/domain/domain_xml.ts";
import { scanPassedDevicesLeniently } from "../../lib/domain/lenient.ts";
import type { DeviceIdentity } from "../../lib/plan/types.ts";

const CORPUS = new URL("../../../shared/libvirt-domains/", import.meta.url);

function exists(url: URL): boolean {
  try {
    Deno.statSync(url);
    return true;
  } catch {
    return false;
  }
}

function hasCommand(name: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${name}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

const haveCorpus = exists(CORPUS);
const haveValidator = hasCommand("virt-xml-validate") && hasCommand("xmllint");

/** An address no corpus file uses, so the add never collides with an existing hostdev. */
const RECORD: DeviceIdentity = {
  address: "0000:7f:1f.7",
  vendorId: "10de",
  deviceId: "2684",
  subsystemVendorId: "1043",
  subsystemDeviceId: "88e2",
  classCode: "030000",
  serial: "00-11-22-ff-ff-33-44-55",
  driver: "nouveau",
  rule: "gpu & 'friends'",
};

function corpusFiles(): { name: string; xml: string }[] {
  return [...Deno.readDirSync(CORPUS)]
    .filter((e) => e.isFile && e.name.endsWith(".xml"))
    .map((e) => e.name)
    .sort()
    .map((name) => ({ name, xml: Deno.readTextFileSync(new URL(name, CORPUS)) }));
}

function addOne(xml: string): string {
  const { records } = parseDomainXml(xml);
  return editDomainXml(xml, {
    remove: [],
    add: [{ address: RECORD.address, managed: true }],
    records: [...records, RECORD],
  });
}

Deno.test({
  name: "editDomainXml() add then remove restores every corpus domain byte for byte",
  ignore: !haveCorpus,
  fn() {
    const files = corpusFiles();
    assertEquals(files.length, 409);
    const failures: string[] = [];
    for (const { name, xml } of files) {
      const records = parseDomainXml(xml).records;
      const added = addOne(xml);
      const parsed = parseDomainXml(added);
      const mine = parsed.hostdevs.filter((h) => h.address === RECORD.address);
      if (mine.length !== 1 || !mine[0]?.owned || !mine[0].managed) {
        failures.push(`${name}: added hostdev not read back as owned and managed`);
      }
      const restored = editDomainXml(added, { remove: [RECORD.address], add: [], records });
      if (restored !== xml) failures.push(`${name}: not restored byte for byte`);
    }
    assertEquals(failures, []);
  },
});

Deno.test({
  name: "editDomainXml() with nothing to do returns every corpus domain unchanged",
  ignore: !haveCorpus,
  fn() {
    const failures = corpusFiles()
      .filter(({ xml }) =>
        editDomainXml(xml, { remove: [], add: [], records: parseDomainXml(xml).records }) !== xml
      )
      .map(({ name }) => name);
    assertEquals(failures, []);
  },
});

/**
 * Validates many files with the command virt-xml-validate runs for schema `domain`
 * (`xmllint --noout --relaxng /usr/share/libvirt/schemas/domain.rng FILE`), but in one xmllint
 * process per batch instead of ~800 processes. Returns the set of files that validate.
 */
async function validateBatch(paths: string[]): Promise<Set<string>> {
  const valid = new Set<string>();
  const chunks: string[][] = [];
  for (let i = 0; i < paths.length; i += 100) chunks.push(paths.slice(i, i + 100));
  // Two batches at a time: each is a single process validating 100 files.
  for (let i = 0; i < chunks.length; i += 2) {
    const outputs = await Promise.all(
      chunks.slice(i, i + 2).map((chunk) =>
        new Deno.Command("xmllint", {
          args: ["--noout", "--relaxng", "/usr/share/libvirt/schemas/domain.rng", ...chunk],
          stdout: "null",
          stderr: "piped",
        }).output()
      ),
    );
    for (const output of outputs) {
      for (const line of new TextDecoder().decode(output.stderr).split("\n")) {
        const match = /^(.*) validates$/.exec(line);
        if (match?.[1] !== undefined) valid.add(match[1]);
      }
    }
  }
  return valid;
}

Deno.test({
  name: "editDomainXml() output validates against libvirt's schema whenever the original does",
  ignore: !haveCorpus || !haveValidator,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "passthrough-corpus-" });
    try {
      const originals: string[] = [];
      const edited: string[] = [];
      for (const { name, xml } of corpusFiles()) {
        const original = `${dir}/orig-${name}`;
        const changed = `${dir}/edit-${name}`;
        await Deno.writeTextFile(original, xml);
        await Deno.writeTextFile(changed, addOne(xml));
        originals.push(original);
        edited.push(changed);
      }
      const valid = await validateBatch([...originals, ...edited]);
      const originalValid = originals.filter((p) => valid.has(p));
      const regressions = originals
        .filter((p, i) => valid.has(p) && !valid.has(edited[i] as string))
        .map((p) => p.slice(dir.length + "/orig-".length));
      console.log(
        `corpus: ${originals.length} files, ${originalValid.length} validate unedited, ` +
          `${originalValid.length - regressions.length} of those still validate edited, ` +
          `${originals.length - originalValid.length} invalid before editing (not counted)`,
      );
      assertEquals(regressions, []);
      // The batch runner must agree with virt-xml-validate itself: spot-check one of each.
      const sample = [originalValid[0], originals.find((p) => !valid.has(p))];
      for (const path of sample) {
        if (path === undefined) continue;
        const { code } = await new Deno.Command("virt-xml-validate", {
          args: [path, "domain"],
          stdout: "null",
          stderr: "null",
        }).output();
        assertEquals(code === 0, valid.has(path), `virt-xml-validate disagrees on ${path}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "the strict and lenient readers agree on the host devices every corpus domain uses",
  ignore: !haveCorpus,
  fn() {
    const disagree: string[] = [];
    let usb = 0;
    let net = 0;
    let char = 0;
    let scsi = 0;
    let mdev = 0;
    for (const { name, xml } of corpusFiles()) {
      const strict = parseDomainXml(xml);
      const lenient = scanPassedDevicesLeniently(xml);
      const strictUsed = {
        blockDisks: [...new Set(strict.blockDisks)].sort(),
        usbDevices: strict.usbDevices,
        scsiHosts: strict.scsiHosts,
        mdevs: strict.mdevs,
        netDevices: [...new Set(strict.netDevices)].sort(),
        charDevices: strict.charDevices,
        networks: strict.networks,
        networkDevices: strict.networkDevices,
      };
      const lenientUsed = {
        blockDisks: lenient.blockDisks,
        usbDevices: lenient.usbDevices,
        scsiHosts: lenient.scsiHosts,
        mdevs: lenient.mdevs,
        netDevices: lenient.netDevices,
        charDevices: lenient.charDevices,
        networks: lenient.networks,
        networkDevices: lenient.networkDevices,
      };
      if (JSON.stringify(strictUsed) !== JSON.stringify(lenientUsed)) disagree.push(name);
      usb += strict.usbDevices.length;
      net += strict.netDevices.length;
      char += strict.charDevices.length;
      scsi += strict.scsiHosts.length;
      mdev += strict.mdevs.length;
    }
    assertEquals(disagree, []);
    // Every USB hostdev of the corpus (by bus and device number) is read, every direct and
    // bridge interface's source, every evdev and virtio passthrough input's and type='dev'
    // character device's, every SCSI hostdev's host adapter and every mediated device's UUID.
    assertEquals([usb, net, char, scsi, mdev], [12, 26, 8, 18, 23]);
  },
});
