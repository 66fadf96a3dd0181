// Every config sample the documentation shows (a fenced ```yaml block in README.md or docs/),
// parsed with the real config parser: a sample that a change of the schema breaks fails here,
// not in the hands of a user who copied it.

import { assertEquals, assertOk } from "../helpers/assert.ts";
import { schemaProblems } from "../helpers/json_schema.ts";
import { parse } from "yaml";
import { parseConfig } from "../../lib/config/config.ts";

const ROOT = new URL("../../", import.meta.url);

/** The documents that may show samples: README.md and every Markdown file under docs/. */
function documents(): string[] {
  const docs = [...Deno.readDirSync(new URL("docs/", ROOT))]
    .filter((e) => e.isFile && e.name.endsWith(".md"))
    .map((e) => `docs/${e.name}`)
    .sort();
  return ["README.md", ...docs];
}

/** The fenced ```yaml blocks of `text`, each with the line its fence opens on. */
function yamlSamples(text: string): { line: number; body: string }[] {
  const samples: { line: number; body: string }[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (!/^\s*```ya?ml\s*$/i.test(lines[i]!)) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^\s*```\s*$/.test(lines[i]!); i++) body.push(lines[i]!);
    samples.push({ line: start + 1, body: body.join("\n") });
  }
  return samples;
}

/** Every config the repository shows a user, as `[where, text]`: samples made whole configs. */
function shownConfigs(): [string, string][] {
  const shown: [string, string][] = [];
  for (const path of documents()) {
    for (const { line, body } of yamlSamples(Deno.readTextFileSync(new URL(path, ROOT)))) {
      // One without `version:` is an excerpt of a whole config, which starts with it.
      shown.push([`${path}:${line}`, /^version:/m.test(body) ? body : `version: 1\n${body}`]);
    }
  }
  for (
    const path of [
      "passthrough_config.yaml",
      "demo/passthrough_config.yaml",
      "demo/refused_config.yaml",
    ]
  ) {
    shown.push([path, Deno.readTextFileSync(new URL(path, ROOT))]);
  }
  return shown;
}

/** The committed JSON schema, as an editor loads it. */
const JSON_SCHEMA = JSON.parse(
  Deno.readTextFileSync(new URL("passthrough_config.schema.json", ROOT)),
) as Record<string, unknown>;

/** What an editor checking `text` against the JSON schema says (YAML 1.2, as it reads it). */
function editorProblems(text: string): string[] {
  return schemaProblems(JSON_SCHEMA, parse(text, { merge: true }));
}

Deno.test("every config sample in README.md and docs/ parses with the config parser", () => {
  let count = 0;
  for (const path of documents()) {
    for (const { line, body } of yamlSamples(Deno.readTextFileSync(new URL(path, ROOT)))) {
      count++;
      // One without `version:` is an excerpt of a whole config, which starts with it.
      const whole = /^version:/m.test(body) ? body : `version: 1\n${body}`;
      try {
        parseConfig(whole, { file: `${path}:${line}` });
      } catch (error) {
        throw new Error(`${path}:${line}: the sample does not parse: ${error}`);
      }
    }
  }
  // The scan found the samples at all (a fence written another way would skip every one).
  assertOk(count >= 4, `only ${count} samples found`);
});

Deno.test("every config sample, the example and the demo's config validate against the JSON schema", () => {
  // README sends users to passthrough_config.schema.json to validate as they type: a sample an
  // editor marks as wrong is one the user cannot tell from a mistake of their own.
  const shown = shownConfigs();
  assertOk(shown.length >= 6, `only ${shown.length} configs found`);
  assertEquals(
    shown.flatMap(([where, text]) => editorProblems(text).map((p) => `${where}: ${p}`)),
    [],
  );
  // The check can fail: the demo's refusals are the reader's, but a key it does not know is both's.
  assertOk(editorProblems("version: 1\nvms: { a: { devices: [], gaurd: warn } }\n").length > 0);
});

Deno.test("what parseConfig() takes as written, the JSON schema takes too", () => {
  // parseConfig() takes the IDs, classes and serials YAML reads as numbers as they are written
  // (device_id: 1521, as lspci -nn prints it), and a class name in any case (VGA, as lspci
  // prints it); the schema wanted a string, or lower case, so an editor marked a config as wrong
  // that plan then took.
  const rule = (match: string) =>
    `version: 1\nvms:\n  vm:\n    devices:\n      - match: { ${match} }\n`;
  const taken = [
    "vendor_id: 8086, device_id: 1521",
    "vendor_id: 0x10de",
    "subsystem_vendor_id: 1043, subsystem_device_id: 0x88e2",
    "class: 0300",
    "class: 03",
    "class: 0x030000",
    "class: VGA",
    "class: NVMe",
    "slot: 3",
    "serial: 0011223344556677",
  ];
  for (const match of taken) {
    parseConfig(rule(match), { file: "c.yaml" });
    assertEquals(editorProblems(rule(match)), [], match);
  }
  // Still refused by both: no ID is a boolean.
  assertOk(editorProblems(rule("vendor_id: true")).length > 0);
});
