/**
 * The reliability log and the report generated from it.
 *
 * Tests call {@link recordCase} for every hostile input, fault and concurrency case they try; when
 * the environment variable `PASSTHROUGH_RELIABILITY_LOG` names a file, each call appends one JSON
 * line to it (otherwise it does nothing, so ordinary test runs write nothing). Run as a script,
 * this module turns such a log into `RELIABILITY.md`:
 *
 * ```sh
 * rm -f /tmp/reliability.jsonl
 * PASSTHROUGH_RELIABILITY_LOG=/tmp/reliability.jsonl deno test -A tests/
 * deno run --allow-read --allow-write scripts/reliability_report.ts /tmp/reliability.jsonl RELIABILITY.md
 * ```
 *
 * @module
 */

/** The environment variable naming the JSON-lines log. */
export const RELIABILITY_LOG_ENV = "PASSTHROUGH_RELIABILITY_LOG";

/** What a case exercised. */
export type ReliabilityArea =
  | "property"
  | "config"
  | "lspci"
  | "sysfs"
  | "domain-xml"
  | "escaping"
  | "fault"
  | "concurrency"
  | "security";

/** One line of the log: a case a test tried and what came of it. */
export interface ReliabilityCase {
  /** What kind of input or fault. */
  area: ReliabilityArea;
  /** The case, in a few words (`YAML tab indentation`, `daemon killed during apply`). */
  name: string;
  /** How many runs the case covers (property runs, inputs); 1 for a single scenario. */
  count: number;
  /** What happened, e.g. `clear error, nothing changed` or `handled`. */
  outcome: string;
  /** The test file that tried it. */
  test: string;
}

function logPath(): string | undefined {
  try {
    return Deno.env.get(RELIABILITY_LOG_ENV) || undefined;
  } catch {
    // Without env permission there is no log to write.
    return undefined;
  }
}

/**
 * Appends `entry` to the log named by `PASSTHROUGH_RELIABILITY_LOG`; does nothing when unset.
 * Call it after the assertions that prove the outcome, so only passing cases are recorded.
 *
 * @example
 * ```ts
 * recordCase({ area: "config", name: "example", count: 1, outcome: "handled", test: "doc" });
 * ```
 */
export function recordCase(entry: ReliabilityCase): void {
  const path = logPath();
  if (path === undefined) return;
  Deno.writeTextFileSync(path, JSON.stringify(entry) + "\n", { append: true, create: true });
}

const AREA_TITLES: Record<ReliabilityArea, string> = {
  property: "Property-based tests (fast-check, seeded)",
  config: "Hostile and broken config",
  lspci: "Broken lspci output",
  sysfs: "Broken sysfs trees",
  "domain-xml": "Hostile domain XML",
  escaping: "Names and values with markup characters",
  fault: "Faults (daemon, libvirt, disk)",
  concurrency: "Concurrency",
  security: "Security",
};

function cell(text: string): string {
  return text.replaceAll("|", "\\|").replaceAll("\n", " ");
}

/**
 * Renders the report from parsed log entries: one table per area, cases merged by name (counts
 * added), in a stable order.
 *
 * @example
 * ```ts
 * import { assertMatch } from "../tests/helpers/assert.ts";
 * const md = renderReliabilityReport([
 *   { area: "config", name: "tabs", count: 1, outcome: "clear error", test: "t.ts" },
 * ]);
 * assertMatch(md, /\| tabs \| 1 \| clear error \| `t\.ts` \|/);
 * ```
 */
export function renderReliabilityReport(entries: readonly ReliabilityCase[]): string {
  const merged = new Map<string, ReliabilityCase>();
  for (const entry of entries) {
    const key = `${entry.area}\u0000${entry.name}\u0000${entry.outcome}`;
    const have = merged.get(key);
    if (have === undefined) merged.set(key, { ...entry });
    else have.count += entry.count;
  }
  const all = [...merged.values()];
  const total = all.reduce((n, e) => n + e.count, 0);
  const lines = [
    "# Reliability",
    "",
    "Everything the reliability tests try: hostile and broken input, faults, concurrency and",
    "security checks, with how many cases each covers and what came of it. Generated from a test",
    "run by `scripts/reliability_report.ts`; do not edit by hand. To regenerate:",
    "",
    "```sh",
    "rm -f /tmp/reliability.jsonl",
    "PASSTHROUGH_RELIABILITY_LOG=/tmp/reliability.jsonl deno test -A tests/",
    "deno run --allow-read --allow-write scripts/reliability_report.ts /tmp/reliability.jsonl RELIABILITY.md",
    "```",
    "",
    'A case is recorded only after its assertions passed. "Nothing changed" means the libvirt',
    "definitions (test driver or a real daemon) and the state directory were compared and found",
    "byte-identical after the failed run.",
    "",
    `${all.length} cases, ${total} runs in all.`,
    "",
  ];
  for (const area of Object.keys(AREA_TITLES) as ReliabilityArea[]) {
    const rows = all.filter((e) => e.area === area).sort((a, b) => a.name.localeCompare(b.name));
    if (rows.length === 0) continue;
    lines.push(
      `## ${AREA_TITLES[area]}`,
      "",
      "| case | runs | outcome | test |",
      "| --- | --- | --- | --- |",
    );
    for (const row of rows) {
      lines.push(`| ${cell(row.name)} | ${row.count} | ${cell(row.outcome)} | \`${row.test}\` |`);
    }
    lines.push("");
  }
  lines.push(
    "## Covered by other suites (not logged here)",
    "",
    ...ELSEWHERE.map(([what, test]) => `- ${what}: \`${test}\``),
    "",
  );
  return lines.join("\n");
}

/** Related cases the module suites already test; listed so the table is not mistaken for all. */
const ELSEWHERE: readonly [string, string][] = [
  ["stale lock broken by exactly one of many racing processes", "tests/state/lock_test.ts"],
  [
    "stale lock replaced by a racing process's own between the look and the open: held, not refused",
    "tests/state/lock_test.ts",
  ],
  [
    "state directory that is a symlink, group-writable or owned by another user",
    "tests/state/state_dir_test.ts",
  ],
  ["backup whose XML no longer matches its sha256 sidecar", "tests/state/backups_test.ts"],
  ["a plan whose XML is unreadable or names another domain", "tests/apply/apply_test.ts"],
  [
    "409 libvirt test domains edited and restored byte for byte",
    "tests/domain/corpus_roundtrip_test.ts",
  ],
  [
    "libvirt errors (codes 35, 38, 42, 92) surfaced as LibvirtError, nothing printed",
    "tests/ffi/errors_test.ts",
  ],
];

/** Parses a JSON-lines log; a malformed line is an error naming its line number. */
export function parseReliabilityLog(text: string): ReliabilityCase[] {
  const entries: ReliabilityCase[] = [];
  text.split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    try {
      entries.push(JSON.parse(line) as ReliabilityCase);
    } catch (error) {
      throw new SyntaxError(
        `Cannot parse reliability log line ${i + 1}: ${(error as Error).message}`,
      );
    }
  });
  return entries;
}

if (import.meta.main) {
  const [input, output] = Deno.args;
  if (input === undefined) {
    console.error("Usage: reliability_report.ts LOG.jsonl [RELIABILITY.md]");
    Deno.exit(2);
  }
  const report = renderReliabilityReport(parseReliabilityLog(Deno.readTextFileSync(input)));
  if (output === undefined) console.log(report);
  else Deno.writeTextFileSync(output, report);
}
