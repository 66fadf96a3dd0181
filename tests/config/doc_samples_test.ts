// Every config sample the documentation shows (a fenced ```yaml block in README.md or docs/),
// parsed with the real config parser: a sample that a change of the schema breaks fails here,
// not in the hands of a user who copied it.

import { assertOk } from "../helpers/assert.ts";
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
