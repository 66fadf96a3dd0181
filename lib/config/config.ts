/**
 * Loads `passthrough_config.yaml`: parses it with source positions, validates it against
 * {@link CONFIG_SCHEMA} (collecting every problem, each with `file:line:col` and a hint), and
 * normalises it into {@link Config} (IDs lower-case without `0x`, class names as prefixes,
 * defaults filled in, rule names derived).
 *
 * Parsing needs the env permission for `LOG_TOKENS` and `LOG_STREAM` (npm `yaml` reads them).
 *
 * @module
 */

import {
  type Alias,
  type Document,
  isAlias,
  isMap,
  isNode,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  parseDocument,
  visit,
} from "yaml";
import {
  CLASS_NAMES,
  CONFIG_SCHEMA,
  FORMAT_PATTERNS,
  MATCH_SCHEMA,
  type RawConfig,
  type RawHostConfig,
  type RawMatch,
  type RawRule,
  type Schema,
  type StringFormat,
} from "./schema.ts";
import { canonicalPciAddress } from "../pci/address.ts";
import { dirname, isAbsolute, join } from "node:path";
import type { PciAddress } from "../host/types.ts";

/** One problem in the config file, located in the source. */
export class ConfigError extends Error {
  override name = "ConfigError";
  /** The file as given to the loader. */
  file: string;
  /** 1-based line and column of the offending node. */
  line: number;
  column: number;
  /** Where in the document: `vms.win10.devices[0].match.vendor_id` (empty for the root). */
  path: string;
  /** What would fix it (`did you mean "vendor_id"?`), or `null`. */
  hint: string | null;

  constructor(
    detail: string,
    where: { file: string; line: number; column: number; path: string; hint?: string | null },
  ) {
    const hint = where.hint ?? null;
    super(
      `${where.file}:${where.line}:${where.column}: ${detail}${
        where.path ? ` at "${where.path}"` : ""
      }${hint ? ` (${hint})` : ""}`,
    );
    this.file = where.file;
    this.line = where.line;
    this.column = where.column;
    this.path = where.path;
    this.hint = hint;
  }
}

/** Every problem found in one config file; thrown by {@link parseConfig} when there is any. */
export class ConfigErrors extends AggregateError {
  override name = "ConfigErrors";
  /** Each problem, in source order. */
  declare errors: ConfigError[];
  /** The file as given to the loader. */
  file: string;

  constructor(file: string, errors: ConfigError[]) {
    super(
      errors,
      `Invalid config "${file}": ${errors.length} ${
        errors.length === 1 ? "problem" : "problems"
      }\n` +
        errors.map((e) => `  ${e.message}`).join("\n"),
    );
    this.file = file;
  }
}

/** The normalised `match` block: IDs are 4 lower-case hex digits without `0x`. */
export interface MatchCriteria {
  vendorId?: string;
  deviceId?: string;
  driver?: string;
  subsystemVendorId?: string;
  subsystemDeviceId?: string;
  /** Class-code prefixes (any of them matches), from hex digits or a class name. */
  classPrefixes?: string[];
  /** The class as written, for messages. */
  classText?: string;
  slot?: string;
  /** Lower-case, dash-separated like lspci prints it. */
  serial?: string;
  numaNode?: number;
  address?: PciAddress;
}

/** One normalised rule. */
export interface DeviceRule {
  /** Unique within its VM. */
  name: string;
  vm: string;
  /** `file:line:col` of the rule. */
  location: string;
  match: MatchCriteria;
  /** How many cards (IOMMU groups) the rule resolves to, or every match. */
  count: number | "all";
  iommuGroup: boolean;
  managed: boolean;
  rom?: { bar?: "on" | "off"; file?: string };
  bootOrder?: number;
  multifunction: boolean;
  allowHostCritical: boolean;
  allowNoFlr: boolean;
  /** The hosts this rule applies on (`host:`/`hosts:`); absent: every host its VM is on. */
  hosts?: string[];
}

/** One VM of the config. */
export interface VmConfig {
  name: string;
  location: string;
  rules: DeviceRule[];
  /** The hosts this VM is planned on (`host:`/`hosts:`); absent: every host. */
  hosts?: string[];
}

/** One host section of a shared config (the top-level `hosts:`). */
export interface HostConfig {
  /** The key under `hosts:`. */
  name: string;
  /** `file:line:col` of the key. */
  location: string;
  /** The libvirt URI (`connect:`), or `null`: `--connect`, else libvirt's default. */
  uri: string | null;
  /**
   * The captured tree to read (`sysfs:`, relative paths resolved against the config file's
   * folder), or `null`: `--sysfs`, else this machine's `/sys`.
   */
  sysfs: string | null;
}

/** A validated, normalised config. */
export interface Config {
  file: string;
  version: 1;
  /** In file order. */
  vms: VmConfig[];
  /** The top-level `hosts:` in file order (a process plans one: `lib/host_section.ts`). */
  hosts?: HostConfig[];
}

/**
 * Whether a libvirt URI names another machine (`qemu+ssh://hv1/system`) rather than this one
 * (`qemu:///system`, `test:///default`): a URI with a host part is remote.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(isRemoteUri("qemu+ssh://root@hv1/system"), true);
 * assertEquals(isRemoteUri("qemu:///system?socket=/tmp/s"), false);
 * ```
 */
export function isRemoteUri(uri: string): boolean {
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(uri);
  if (m === null) return false;
  const authority = (m[1] ?? "").replace(/^[^@]*@/, "").replace(/:\d*$/, "");
  return authority !== "";
}

/** Edit distance, for "did you mean" hints. */
function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

/** The closest of `options` to `word`, when close enough to be a plausible typo. */
function nearest(word: string, options: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const option of options) {
    const d = editDistance(word.toLowerCase(), option);
    if (d < bestDistance) [best, bestDistance] = [option, d];
  }
  return best !== null && bestDistance <= Math.max(2, Math.floor(word.length / 2)) ? best : null;
}

interface Context {
  file: string;
  doc: Document.Parsed;
  lines: LineCounter;
  /** What each alias points to (the last node anchored with its name before it). */
  aliases: Map<Alias, Node>;
  errors: ConfigError[];
}

/** Steps from the root to a node: mapping keys as YAML read them, list indexes as numbers. */
type Steps = readonly unknown[];

/** `vms.win10.devices[0].match` */
function showPath(steps: Steps): string {
  return steps.map((step, i) =>
    typeof step === "number" ? `[${step}]` : i === 0 ? String(step) : `.${String(step)}`
  ).join("");
}

/**
 * The node at `steps` (its key with `key`), following aliases to what they point to; when a step
 * is missing, the deepest node on the way.
 */
function nodeAt(ctx: Context, steps: Steps, key = false): Node | null {
  const follow = (node: unknown) => isAlias(node) ? ctx.aliases.get(node) ?? node : node;
  let node = follow(ctx.doc.contents);
  for (const [i, step] of steps.entries()) {
    let next: unknown;
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === step);
      next = key && i === steps.length - 1 ? pair?.key : follow(pair?.value);
    } else if (isSeq(node) && typeof step === "number") {
      next = follow(node.items[step]);
    }
    if (!isNode(next)) break;
    node = next;
  }
  return isNode(node) ? node : null;
}

function errorAt(
  ctx: Context,
  node: Node | null,
  path: string,
  detail: string,
  hint: string | null,
) {
  const pos = ctx.lines.linePos(node?.range?.[0] ?? 0);
  ctx.errors.push(
    new ConfigError(detail, { file: ctx.file, line: pos.line, column: pos.col, path, hint }),
  );
}

/** Reports a problem at the node `at` (its key with `key`), showing `path` (default: `at`). */
function report(
  ctx: Context,
  at: Steps,
  detail: string,
  hint: string | null,
  options: { key?: boolean; path?: Steps } = {},
): void {
  errorAt(ctx, nodeAt(ctx, at, options.key), showPath(options.path ?? at), detail, hint);
}

function location(ctx: Context, at: Steps, key = false): string {
  const pos = ctx.lines.linePos(nodeAt(ctx, at, key)?.range?.[0] ?? 0);
  return `${ctx.file}:${pos.line}:${pos.col}`;
}

/**
 * The keys of a `match` block whose values YAML may read as numbers (`0x10de`, `0300`, `3`); they
 * appear nowhere else, so they are recognised anywhere (also in an anchored block).
 */
const FORMATTED_KEYS = new Set(
  Object.entries(MATCH_SCHEMA.properties).flatMap(([key, s]) => "format" in s ? [key] : []),
);

/** The steps to the last of `chain`, a node and its ancestors as yaml's `visit()` gives them. */
function stepsTo(chain: readonly unknown[]): unknown[] {
  return chain.flatMap((item, i) => {
    const next = chain[i + 1];
    if (isPair(item) && next === item.value) {
      return [isScalar(item.key) ? item.key.value : item.key];
    }
    return isSeq(item) ? [item.items.indexOf(next as Node)] : [];
  });
}

/**
 * Prepares the parsed document for {@link Document.toJS}: takes IDs, classes and slots as written
 * (YAML reads `vendor_id: 0x10de` as 4318 and `class: 0300` as 300), indexes what each alias
 * points to (for positions) and reports aliases without an anchor.
 */
function prepare(ctx: Context): void {
  const anchors = new Map<string, Node>();
  visit(ctx.doc, {
    Alias(_, alias, ancestors) {
      const target = anchors.get(alias.source);
      if (target === undefined) {
        const at = stepsTo([...ancestors, alias]);
        report(ctx, at, `Unknown alias "*${alias.source}"`, "define the anchor before it");
      } else {
        ctx.aliases.set(alias, target);
      }
    },
    Node(_, node) {
      if (node.anchor) anchors.set(node.anchor, node);
    },
    Pair(_, pair) {
      const { key, value } = pair;
      if (
        isScalar(value) && typeof value.value === "number" &&
        isScalar(key) && FORMATTED_KEYS.has(key.value as string)
      ) {
        value.value = value.source;
      }
    },
  });
}

/** The document as data (mappings as `Map`s, in file order), aliases expanded by yaml. */
function toData(ctx: Context): unknown {
  try {
    // yaml's `maxAliasCount` (100 copies of an anchor, nested aliases multiplied) stops alias bombs.
    return ctx.doc.toJS({ mapAsMap: true });
  } catch (error) {
    if (!(error instanceof ReferenceError)) throw error;
    errorAt(
      ctx,
      ctx.aliases.keys().next().value ?? null,
      "",
      "Aliases expand into too many copies",
      "yaml allows about 100 uses of an anchor: reuse anchors less, or write the values out",
    );
    return undefined;
  }
}

function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (value instanceof Map) return "a mapping";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "string") return `the string "${value}"`;
  if (typeof value === "number" || typeof value === "boolean") {
    return `${typeof value} ${JSON.stringify(value)}`;
  }
  return "an unsupported value";
}

/** Normalises a value of a string format, or returns `null` when it does not fit. */
function normaliseFormat(format: StringFormat, text: string): string | null {
  const value = text.trim();
  if (format === "class") {
    const name = value.toLowerCase();
    if (name in CLASS_NAMES) return name;
  }
  if (format === "slot") return new RegExp(FORMAT_PATTERNS.slot).test(value) ? value : null;
  if (!new RegExp(FORMAT_PATTERNS[format]).test(value)) return null;
  const hex = (s: string) => s.replace(/^0x/i, "").toLowerCase();
  switch (format) {
    case "pci-id":
      return hex(value).padStart(4, "0");
    case "vendor-device": {
      const [v, d] = value.split(":") as [string, string];
      return `${hex(v).padStart(4, "0")}:${hex(d).padStart(4, "0")}`;
    }
    case "class":
      return hex(value);
    case "pci-address":
      return canonicalPciAddress(value);
    case "serial": {
      const digits = value.replace(/[-:]/g, "").toLowerCase();
      return digits.match(/../g)!.join("-");
    }
    case "absolute-path":
      return value;
  }
  return null;
}

const FORMAT_HINTS: Record<StringFormat, string> = {
  "pci-id": 'expected up to 4 hex digits such as "10de" or "0x10de"',
  "vendor-device": 'expected "vendor:device" in hex such as "10de:2684"',
  "class": `expected 2, 4 or 6 hex digits ("03", "0c03") or a class name (${
    Object.keys(CLASS_NAMES).join(", ")
  })`,
  "pci-address": 'expected a PCI address such as "0000:0b:00.0" or "0b:00.0"',
  "serial": 'expected a device serial number such as "00-11-22-ff-ff-33-44-55"',
  "slot": "expected a non-empty slot name",
  "absolute-path": 'expected an absolute path such as "/usr/share/vgabios/gpu.rom"',
};

/**
 * Checks `value` (from {@link toData}) against `schema`, reporting every problem; returns the
 * value as plain objects with formats normalised, or `undefined` where it does not fit.
 */
function check(value: unknown, schema: Schema, at: Steps, ctx: Context): unknown {
  const fail = (detail: string, hint: string | null) => void report(ctx, at, detail, hint);
  const wrongType = (expected: string, hint: string) =>
    fail(`Expected ${expected}, found ${describe(value)}`, hint);
  switch (schema.type) {
    case "string": {
      if (typeof value !== "string") {
        const single = value instanceof Map || Array.isArray(value);
        return wrongType(
          "a string",
          single ? 'write a single value, quoted: "..."' : 'quote the value: "..."',
        );
      }
      if (schema.enum) {
        if (schema.enum.includes(value)) return value;
        const near = nearest(value, schema.enum);
        const expected = schema.enum.map((e) => `"${e}"`).join(", ");
        return fail(
          `Invalid value "${value}": expected one of ${expected}`,
          near ? `did you mean "${near}"?` : null,
        );
      }
      if (schema.format === undefined) return value;
      const normal = normaliseFormat(schema.format, value);
      if (normal !== null) return normal;
      const near = schema.format === "class" ? nearest(value, Object.keys(CLASS_NAMES)) : null;
      return fail(
        `Invalid ${schema.format} "${value}"`,
        near ? `did you mean "${near}"?` : FORMAT_HINTS[schema.format],
      );
    }
    case "integer": {
      if (typeof value !== "number" || !Number.isInteger(value)) {
        return wrongType("an integer", "write a whole number without quotes, e.g. 1");
      }
      if (schema.const !== undefined && value !== schema.const) {
        return fail(
          `Unsupported value ${value}: expected ${schema.const}`,
          `write ${schema.const}`,
        );
      }
      if (value > MAX_INTEGER) {
        // libvirt keeps these numbers (boot order, counts, NUMA nodes) in C ints.
        return fail(
          `Value ${value} is too large: the maximum is ${MAX_INTEGER}`,
          `use ${MAX_INTEGER} or less`,
        );
      }
      if (schema.minimum !== undefined && value < schema.minimum) {
        return fail(
          `Value ${value} is too small: the minimum is ${schema.minimum}`,
          `use ${schema.minimum} or more`,
        );
      }
      return value;
    }
    case "boolean": {
      if (typeof value !== "boolean") {
        return wrongType("true or false", "write true or false without quotes");
      }
      if (schema.const !== undefined && value !== schema.const) {
        return fail(`Unsupported value ${value}: expected ${schema.const}`, "omit the key");
      }
      return value;
    }
    case "array": {
      if (!Array.isArray(value)) return wrongType("a list", 'start each item with "- "');
      return value.map((item, i) => check(item, schema.items, [...at, i], ctx));
    }
    case "map": {
      if (!(value instanceof Map)) {
        return wrongType("a mapping", "write NAME: followed by indented keys");
      }
      const pattern = new RegExp(schema.keyPattern);
      const entries: [string, unknown][] = [];
      for (const [key, item] of value) {
        if (typeof key === "string" && pattern.test(key)) {
          entries.push([key, check(item, schema.values, [...at, key], ctx)]);
        } else {
          const hint = schema.keyHint ?? "use the libvirt domain name";
          const name = typeof key === "string" ? JSON.stringify(key) : describe(key);
          report(ctx, [...at, key], `Invalid name ${name}`, hint, { key: true, path: at });
        }
      }
      // `fromEntries` makes a VM named "__proto__" an entry, not the prototype.
      return Object.fromEntries(entries);
    }
    case "object": {
      const known = Object.keys(schema.properties);
      if (!(value instanceof Map)) {
        return wrongType("a mapping", `write "key: value" pairs: ${known.join(", ")}`);
      }
      const out: Record<string, unknown> = {};
      for (const [key, item] of value) {
        if (typeof key !== "string") {
          const detail = `Invalid key ${describe(key)}`;
          report(ctx, [...at, key], detail, "keys are plain words", { key: true, path: at });
        } else if (!Object.hasOwn(schema.properties, key)) {
          const near = nearest(key, known);
          const hint = near ? `did you mean "${near}"?` : `expected one of ${known.join(", ")}`;
          report(ctx, [...at, key], `Unknown key "${key}"`, hint, { key: true });
        } else {
          out[key] = check(item, schema.properties[key]!, [...at, key], ctx);
        }
      }
      for (const required of schema.required ?? []) {
        if (!value.has(required)) fail(`Missing key "${required}"`, `add "${required}:"`);
      }
      if (schema.minProperties !== undefined && value.size < schema.minProperties) {
        fail("Empty mapping", `give at least one of ${known.join(", ")}`);
      }
      for (const [a, b] of schema.exclusive ?? []) {
        if (value.has(a) && value.has(b)) {
          fail(`Keys "${a}" and "${b}" exclude each other`, "keep one of them");
        }
      }
      return out;
    }
  }
}

function normaliseHosts(
  raw: Record<string, RawHostConfig | undefined>,
  ctx: Context,
): HostConfig[] {
  const hosts: HostConfig[] = [];
  for (const [name, rawHost] of Object.entries(raw)) {
    if (rawHost === undefined) continue;
    const sysfs = rawHost.sysfs === undefined
      ? null
      : isAbsolute(rawHost.sysfs)
      ? rawHost.sysfs
      : join(dirname(ctx.file), rawHost.sysfs);
    hosts.push({
      name,
      location: location(ctx, ["hosts", name], true),
      uri: rawHost.connect ?? null,
      sysfs,
    });
  }
  return hosts;
}

/** `host:`/`hosts:` of a VM or rule as a list (validated against the declared hosts). */
function hostReferences(
  raw: { host?: string; hosts?: string[] },
  at: Steps,
  declared: readonly string[] | null,
  ctx: Context,
): string[] | undefined {
  const names = raw.host !== undefined ? [raw.host] : raw.hosts;
  if (names === undefined) return undefined;
  const key = raw.host !== undefined ? "host" : "hosts";
  if (declared === null) {
    report(
      ctx,
      [...at, key],
      `No hosts are declared: "${key}" names hosts of the top-level "hosts:"`,
      'add a top-level "hosts:" mapping, or remove this key',
    );
    return undefined;
  }
  if (names.length === 0) {
    report(ctx, [...at, key], "Empty host list", "name at least one host");
    return undefined;
  }
  names.forEach((name, i) => {
    if (declared.includes(name)) return;
    const near = nearest(name, declared);
    report(
      ctx,
      raw.host !== undefined ? [...at, "host"] : [...at, "hosts", i],
      `Unknown host "${name}"`,
      near
        ? `did you mean "${near}"?`
        : `declared hosts: ${declared.map((d) => `"${d}"`).join(", ")}`,
    );
  });
  return [...new Set(names)];
}

function deriveRuleName(match: RawMatch): string {
  if (match.vendor_device_id) return match.vendor_device_id;
  const parts: string[] = [];
  if (match.vendor_id || match.device_id) {
    parts.push(`${match.vendor_id ?? "*"}:${match.device_id ?? "*"}`);
  }
  if (match.class) parts.push(match.class);
  if (match.driver) parts.push(match.driver);
  if (match.address) parts.push(match.address);
  if (match.slot) parts.push(`slot-${match.slot}`);
  if (match.serial) parts.push(match.serial);
  if (parts.length === 0) parts.push("device");
  return parts.join("-");
}

function normaliseMatch(raw: RawMatch, at: Steps, ctx: Context): MatchCriteria {
  const m: MatchCriteria = {};
  if (raw.vendor_device_id) {
    const [v, d] = raw.vendor_device_id.split(":") as [string, string];
    m.vendorId = v;
    m.deviceId = d;
  }
  const conflict = (key: string, a: string, b: string) =>
    report(
      ctx,
      at,
      `Conflicting criteria: "${key}" is "${a}" but "vendor_device_id" says "${b}"`,
      "give the ID once",
      { path: [...at, key] },
    );
  if (raw.vendor_id !== undefined) {
    if (m.vendorId !== undefined && m.vendorId !== raw.vendor_id) {
      conflict("vendor_id", raw.vendor_id, m.vendorId);
    }
    m.vendorId = raw.vendor_id;
  }
  if (raw.device_id !== undefined) {
    if (m.deviceId !== undefined && m.deviceId !== raw.device_id) {
      conflict("device_id", raw.device_id, m.deviceId);
    }
    m.deviceId = raw.device_id;
  }
  if (raw.driver !== undefined) m.driver = raw.driver;
  if (raw.subsystem_vendor_id !== undefined) m.subsystemVendorId = raw.subsystem_vendor_id;
  if (raw.subsystem_device_id !== undefined) m.subsystemDeviceId = raw.subsystem_device_id;
  if (raw.class !== undefined) {
    m.classText = raw.class;
    m.classPrefixes = [...(CLASS_NAMES[raw.class] ?? [raw.class])];
  }
  if (raw.slot !== undefined) m.slot = raw.slot;
  if (raw.serial !== undefined) m.serial = raw.serial;
  if (raw.numa_node !== undefined) m.numaNode = raw.numa_node;
  if (raw.address !== undefined) m.address = raw.address;
  return m;
}

/** yaml's own errors (syntax, duplicate keys, nesting) as config errors. */
function yamlErrors(ctx: Context): void {
  // Nesting too deep overflows the stack once per level, and leaves the rest unparsed: say it once.
  const deep = ctx.doc.errors.find((e) => e.code === "RESOURCE_EXHAUSTION");
  for (const error of deep ? [deep] : ctx.doc.errors) {
    const [detail, hint] = error.code === "DUPLICATE_KEY"
      ? ["Duplicate key: each key may appear once", "merge the two entries"]
      : deep
      ? ["Nesting too deep", "a config nests a few levels: is this the right file?"]
      : [error.message, "check the indentation and quoting here"];
    const pos = ctx.lines.linePos(error.pos[0]);
    ctx.errors.push(
      new ConfigError(detail, { file: ctx.file, line: pos.line, column: pos.col, path: "", hint }),
    );
  }
}

/**
 * Parses and validates config text. Throws {@link ConfigErrors} listing every problem.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const config = parseConfig(
 *   'version: 1\nvms:\n  win10:\n    devices:\n      - match: { vendor_device_id: "10DE:0x2684" }\n',
 *   { file: "example.yaml" },
 * );
 * assertEquals(config.vms[0]?.rules[0]?.match, { vendorId: "10de", deviceId: "2684" });
 * assertEquals(config.vms[0]?.rules[0]?.location, "example.yaml:5:9");
 * ```
 */
export function parseConfig(text: string, options: { file: string }): Config {
  const lines = new LineCounter();
  // yaml refuses duplicate keys itself (`uniqueKeys`, on by default).
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const ctx: Context = { file: options.file, doc, lines, aliases: new Map(), errors: [] };
  const fail = () => new ConfigErrors(ctx.file, ctx.errors);
  yamlErrors(ctx);
  if (ctx.errors.length > 0) throw fail();
  if (doc.contents === null) {
    errorAt(ctx, null, "", "Empty config", 'start with "version: 1" and "vms:"');
    throw fail();
  }
  prepare(ctx);
  if (ctx.errors.length > 0) throw fail();
  const data = toData(ctx);
  if (ctx.errors.length > 0) throw fail();
  const raw = check(data, CONFIG_SCHEMA, [], ctx) as RawConfig | undefined;
  const config: Config = { file: ctx.file, version: 1, vms: [] };
  let declaredHosts: string[] | null = null;
  if (raw?.hosts !== undefined) {
    config.hosts = normaliseHosts(raw.hosts as Record<string, RawHostConfig | undefined>, ctx);
    declaredHosts = Object.keys(raw.hosts);
    if (declaredHosts.length === 0) {
      report(ctx, ["hosts"], "Empty host list", 'declare at least one host, or remove "hosts:"');
    }
  }
  for (const [vmName, rawVm] of Object.entries(raw?.vms ?? {})) {
    const vmAt = ["vms", vmName];
    const vm: VmConfig = { name: vmName, location: location(ctx, vmAt, true), rules: [] };
    const vmHosts = rawVm === undefined
      ? undefined
      : hostReferences(rawVm, vmAt, declaredHosts, ctx);
    if (vmHosts !== undefined) vm.hosts = vmHosts;
    config.vms.push(vm);
    const rules = (rawVm?.devices ?? []) as (RawRule | undefined)[];
    // Rule names with the hosts each is limited to (absent: every host). One name may appear
    // on disjoint hosts: "gpu" is then that host's card on each host.
    const seen = new Map<string, (string[] | undefined)[]>();
    const clashes = (name: string, hosts: string[] | undefined) =>
      (seen.get(name) ?? []).some((other) =>
        hosts === undefined || other === undefined || other.some((h) => hosts.includes(h))
      );
    rules.forEach((rawRule, i) => {
      if (rawRule?.match === undefined) return;
      const at = [...vmAt, "devices", i];
      const match = normaliseMatch(rawRule.match, [...at, "match"], ctx);
      const ruleHosts = hostReferences(rawRule, at, declaredHosts, ctx);
      let name = rawRule.name ?? deriveRuleName(rawRule.match);
      if (rawRule.name !== undefined && clashes(name, ruleHosts)) {
        report(
          ctx,
          [...at, "name"],
          `Duplicate rule name "${name}" in VM "${vmName}"`,
          ruleHosts === undefined && declaredHosts !== null
            ? 'give each rule of a VM its own name, or limit each to other hosts with "host:"'
            : "give each rule of a VM its own name",
        );
      } else if (clashes(name, ruleHosts)) {
        // Two unnamed rules with the same criteria: number them so records stay distinct.
        let k = 2;
        while (clashes(`${name}#${k}`, ruleHosts)) k++;
        name = `${name}#${k}`;
      }
      seen.set(name, [...(seen.get(name) ?? []), ruleHosts]);
      const rule: DeviceRule = {
        name,
        vm: vmName,
        location: location(ctx, at),
        match,
        count: rawRule.all ? "all" : rawRule.count ?? 1,
        iommuGroup: rawRule.iommu_group ?? true,
        managed: rawRule.managed ?? true,
        multifunction: rawRule.multifunction ?? false,
        allowHostCritical: rawRule.allow_host_critical ?? false,
        allowNoFlr: rawRule.allow_no_flr ?? false,
      };
      if (rawRule.rom !== undefined) {
        const rom: { bar?: "on" | "off"; file?: string } = {};
        if (rawRule.rom.bar !== undefined) rom.bar = rawRule.rom.bar;
        if (rawRule.rom.file !== undefined) rom.file = rawRule.rom.file;
        rule.rom = rom;
      }
      if (rawRule.boot_order !== undefined) rule.bootOrder = rawRule.boot_order;
      if (ruleHosts !== undefined) {
        const outside = vmHosts === undefined ? [] : ruleHosts.filter((h) => !vmHosts.includes(h));
        if (outside.length > 0) {
          report(
            ctx,
            [...at, rawRule.host !== undefined ? "host" : "hosts"],
            `Rule names host "${outside[0]}" but VM "${vmName}" is not planned there`,
            `the VM is limited to ${vmHosts!.map((h) => `"${h}"`).join(", ")}`,
          );
        }
        rule.hosts = ruleHosts;
      }
      vm.rules.push(rule);
    });
  }
  if (ctx.errors.length > 0) {
    ctx.errors.sort((a, b) => a.line - b.line || a.column - b.column);
    throw fail();
  }
  return config;
}

/** Reads and parses a config file. Throws {@link ConfigErrors}, or the read error. */
export async function loadConfig(path: string): Promise<Config> {
  const refuse = (detail: string, hint: string, line = 1, column = 1) =>
    new ConfigErrors(path, [new ConfigError(detail, { file: path, line, column, path: "", hint })]);
  // A FIFO blocks until a writer comes and /dev/zero never ends: read regular files only.
  let bytes: Uint8Array;
  try {
    if (!(await Deno.stat(path)).isFile) {
      throw refuse("Not a regular file", "give the path of a YAML file");
    }
    bytes = await Deno.readFile(path);
  } catch (error) {
    throw unreadableConfig(path, error);
  }
  if (bytes.length > MAX_CONFIG_BYTES) {
    throw refuse(
      `File too large: ${bytes.length} bytes, the limit is ${MAX_CONFIG_BYTES}`,
      "is this the right file?",
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    // Decoding leniently would turn bad bytes into U+FFFD inside VM names and IDs.
    const at = firstInvalidUtf8(bytes);
    const before = new TextDecoder().decode(bytes.subarray(0, at));
    const line = before.split("\n").length;
    const column = before.length - before.lastIndexOf("\n");
    throw refuse(`Invalid UTF-8 at byte ${at}`, "save the file as UTF-8", line, column);
  }
  return parseConfig(text, { file: path });
}

/** Why the config file at `path` cannot be read, in words, with the path (the error as is else). */
function unreadableConfig(path: string, error: unknown): unknown {
  const why = error instanceof Deno.errors.NotFound
    ? "no such file"
    : error instanceof Deno.errors.FilesystemLoop
    ? "a loop of symbolic links"
    : error instanceof Deno.errors.PermissionDenied
    ? "permission denied (check its owner and mode, or run as root)"
    : null;
  // The sentence says all the system's error does; Deno's own refusals and the rest pass as is.
  return why === null ? error : new Error(`Cannot read config "${path}": ${why}`);
}

/**
 * The largest config file {@link loadConfig} reads (64 KiB). A host has a few dozen PCI devices
 * and a commented config for it a few kilobytes; yaml's checks (duplicate keys, aliases) take time
 * growing with the square of the size, so a larger file is refused before parsing.
 */
export const MAX_CONFIG_BYTES = 64 * 1024;

/** The largest integer a config may hold (C `int`, as libvirt stores boot order and the like). */
const MAX_INTEGER = 2147483647;

/** Offset of the first byte that starts a malformed UTF-8 sequence (for the message only). */
function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    const n = b < 0x80
      ? 0
      : b >= 0xc2 && b <= 0xdf
      ? 1
      : b >= 0xe0 && b <= 0xef
      ? 2
      : b >= 0xf0 && b <= 0xf4
      ? 3
      : -1;
    if (n < 0) return i;
    for (let k = 1; k <= n; k++) if (((bytes[i + k] ?? 0) & 0xc0) !== 0x80) return i;
    i += n + 1;
  }
  return bytes.length;
}
