/**
 * README is written for a user (issue 16): install, walkthrough, config, what to do after
 * hardware changes and troubleshooting come in that order, the install explains the clone URL
 * placeholder, putting `bin/passthrough` on PATH and where the config lives, and the test
 * command says how long it takes. The two quick-start commands stay as they are.
 */

import { assertEquals, assertMatch, assertOk } from "../helpers/assert.ts";

const README = Deno.readTextFileSync(new URL("../../README.md", import.meta.url));

/** The text of the `## NAME` section, up to the next `## `. */
function section(name: string): string {
  const start = README.indexOf(`\n## ${name}\n`);
  assertOk(start >= 0, `README has no "## ${name}" section`);
  const end = README.indexOf("\n## ", start + 1);
  return README.slice(start, end < 0 ? undefined : end);
}

Deno.test("README: a user's sections in a user's order", () => {
  const order = [
    "Install",
    "Walkthrough",
    "The config",
    "After hardware changes",
    "Troubleshooting",
  ];
  const at = order.map((name) => README.indexOf(`\n## ${name}\n`));
  assertOk(at.every((i) => i >= 0), `missing one of ${order.join(", ")}`);
  assertEquals([...at].sort((a, b) => a - b), at, "sections out of order");
  const headings = [...README.matchAll(/^## (.+)$/gm)].map((m) => m[1]);
  assertEquals(headings[0], "Install", "Install comes first");
});

Deno.test("README: install explains the clone URL, PATH and where the config lives", () => {
  const install = section("Install");
  assertMatch(install, /\.\/quickstart\.sh demo/);
  assertMatch(install, /\.\/quickstart\.sh test/);
  assertMatch(install, /git clone <repository-url>/);
  assertMatch(install, /replace `<repository-url>` with/);
  assertMatch(install, /ln -s \S*bin\/passthrough \/usr\/local\/bin\/passthrough/);
  assertMatch(install, /\/etc\/passthrough\/passthrough_config\.yaml/);
  assertMatch(install, /PASSTHROUGH_CONFIG/);
  assertMatch(install, /`test` takes about [0-9]+( to [0-9]+)? minutes/);
  assertMatch(install, /already on your PATH is used when it is that version/);
});

Deno.test("README: troubleshooting answers the first failures", () => {
  const trouble = section("Troubleshooting");
  for (
    const symptom of [
      /no IOMMU groups/,
      /No config file/,
      // The line for a file the user named (-f, $PASSTHROUGH_CONFIG) that is not there.
      /nothing is there: check the path/,
      /Cannot connect to libvirt/,
      /Cannot reach libvirt/,
      /No terminal to confirm on/,
      /ambiguous/,
      /group-contains-host-critical/,
      /refusing to start/,
    ]
  ) assertMatch(trouble, symptom);
});

Deno.test("README: every issue code a plan can give is explained", () => {
  // Scripts branch on `plan --json`'s codes: one they cannot look up is one they cannot handle.
  const types = Deno.readTextFileSync(new URL("../../lib/plan/types.ts", import.meta.url));
  const start = types.indexOf("export type IssueCode");
  const union = types.slice(start, types.indexOf(";", start));
  const codes = [...union.matchAll(/\| "([a-z-]+)"/g)].map((m) => m[1]!);
  assertOk(codes.length > 30, `found only ${codes.length} codes in lib/plan/types.ts`);
  const json = section("`plan --json`");
  assertEquals(codes.filter((code) => !json.includes(`\`${code}\``)), []);
});

Deno.test("README: every code apply --json gives a VM is explained, as ApplyCode's own docs are", () => {
  const source = Deno.readTextFileSync(new URL("../../lib/apply/apply.ts", import.meta.url));
  const start = source.indexOf("export type ApplyCode");
  const union = source.slice(start, source.indexOf(";", start));
  const codes = [...union.matchAll(/\| "([a-z-]+)"/g)].map((m) => m[1]!);
  assertOk(codes.length > 10, `found only ${codes.length} codes in lib/apply/apply.ts`);
  const json = section("`plan --json`");
  assertEquals(codes.filter((code) => !json.includes(`\`${code}\``)), []);
  // The type's JSDoc lists each code once, and none that the type no longer has.
  const jsdoc = source.slice(source.lastIndexOf("/**", start), start);
  const documented = [...jsdoc.matchAll(/^ \* - `([a-z-]+)`(?:, `([a-z-]+)`)?:/gm)]
    .flatMap((m) => m.slice(1).filter((c) => c !== undefined));
  assertEquals([...documented].sort(), [...codes].sort());
});

Deno.test("README: the example config's schema line it quotes is the example's first, and says where a copy finds the schema", () => {
  const example = Deno.readTextFileSync(new URL("../../passthrough_config.yaml", import.meta.url));
  const first = example.slice(0, example.indexOf("\n"));
  const config = section("The config");
  assertOk(config.includes(`(\`${first}\`)`), `README does not quote "${first}"`);
  // The path is relative to the config: the clone's schema for the example, none in a copy.
  const schema = /\$schema=(\S+)$/.exec(first)![1]!;
  Deno.statSync(new URL(`../../${schema}`, import.meta.url));
  assertMatch(
    config,
    /in a copy elsewhere .*name the clone's \(`\$schema=\/opt\/passthrough\/\S+`\)/s,
  );
});

Deno.test("README, the example config and the schema say boot_order is refused beside <os><boot dev>", () => {
  // The example said the rule's boot_order "needs no <boot dev=...> in the domain's <os>", where
  // plan refuses it while the VM has one (libvirt will not combine the two): a user copying it to
  // a VM made by virt-manager, which writes <boot dev='hd'/>, read that nothing was needed.
  const plans = Deno.readTextFileSync(new URL("../../lib/plan/vm_edit.ts", import.meta.url));
  assertMatch(plans, /code: "boot-order-conflict",\s*message:\s*`[^`]*boots by <os><boot dev=/);
  const config = section("The config").replaceAll(/\s+/g, " ");
  assertMatch(config, /`boot_order` \([^)]*<os><boot dev=[^)]*`boot-order-conflict`/);
  const example = Deno.readTextFileSync(new URL("../../passthrough_config.yaml", import.meta.url));
  const comment = /((?:^ *#.*\n)+) *boot_order:/m.exec(example)?.[1]?.replaceAll(/\s*#\s*/g, " ");
  assertOk(comment !== undefined, "the example sets no commented boot_order");
  assertOk(!/needs no <boot dev/.test(comment), comment);
  assertMatch(comment, /boot-order-conflict/);
  const schema = JSON.parse(
    Deno.readTextFileSync(new URL("../../passthrough_config.schema.json", import.meta.url)),
  );
  const rule = schema.properties.vms.additionalProperties.properties.devices.items;
  assertMatch(rule.properties.boot_order.description, /<boot dev=/);
});
