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
  isCollection,
  isMap,
  isNode,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  parseDocument,
} from "yaml";
import {
  CLASS_NAMES,
  CONFIG_SCHEMA,
  FORMAT_PATTERNS,
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
  errors: ConfigError[];
  /** What each alias points to, indexed at the first alias met (see {@link resolveAlias}). */
  aliases?: Map<Alias, Node>;
}

/**
 * Parses `text` as a YAML document with source positions, refusing duplicate keys as yaml does.
 *
 * yaml's own duplicate-key check (`uniqueKeys`) compares each key with every key before it in
 * its mapping: quadratic in the VMs under `vms:`, over 40% of the time for 8,000 VMs and growing.
 * So the document is first composed without it and its keys checked with one set per
 * mapping ({@link mayRepeatKeys}). Only a document with a repeated key, an error or an explicit
 * tag is parsed again with yaml's check, so that its errors are yaml's own, in yaml's order.
 */
function parseYaml(text: string): { doc: Document.Parsed; lines: LineCounter } {
  const parse = (uniqueKeys: boolean) => {
    // A fresh counter each time: the parser appends every line start it meets.
    const lines = new LineCounter();
    const doc = parseDocument(text, {
      lineCounter: lines,
      uniqueKeys,
      prettyErrors: false,
      keepSourceTokens: true,
    });
    return { doc, lines };
  };
  const unchecked = parse(false);
  if (unchecked.doc.errors.length === 0 && !mayRepeatKeys(unchecked.doc.contents)) return unchecked;
  return parse(true);
}

/**
 * Whether yaml's `uniqueKeys` check could report anything in this composed tree: a mapping whose
 * keys repeat a scalar value (yaml compares keys by `===`), or a node with an explicit tag (a
 * tagged collection, `!!omap` or `!!pairs`, is rebuilt while composing, so the mappings yaml
 * checked are no longer in the tree to look at).
 */
function mayRepeatKeys(root: unknown): boolean {
  return someNode(root, (node) => {
    if (node.tag) return true;
    if (!isMap(node)) return false;
    const keys = new Set<unknown>();
    for (const pair of node.items) {
      if (!isScalar(pair.key)) continue;
      const key = pair.key.value;
      // A set finds NaN in itself; `===` never does, so yaml never calls it a duplicate.
      if (keys.has(key) && !Number.isNaN(key)) return true;
      keys.add(key);
    }
    return false;
  });
}

/**
 * Whether `test` holds for a node under `root` (keys included, aliases not followed), tried in
 * the order of yaml's `visit()`: depth first, each node before its children. Iterative, unlike
 * `visit()`, which also copies the path for every node: a hostile document nests deeply.
 */
function someNode(root: unknown, test: (node: Node) => boolean): boolean {
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const node = stack.pop();
    if (isPair(node)) {
      stack.push(node.value, node.key);
    } else if (isNode(node)) {
      if (test(node)) return true;
      if (isCollection(node)) {
        for (let i = node.items.length - 1; i >= 0; i--) stack.push(node.items[i]);
      }
    }
  }
  return false;
}

/**
 * The node `alias` points to, or `undefined`: the last node anchored with its name before it, as
 * yaml's `Alias.resolve()` answers. That walks the whole document on every call, quadratic when
 * every VM reuses a shared rule; one walk indexes every alias instead, made only once an alias is
 * met (a document without aliases is not walked).
 */
function resolveAlias(ctx: Context, alias: Alias): Node | undefined {
  if (ctx.aliases === undefined) {
    const aliases = new Map<Alias, Node>();
    const anchors = new Map<string, Node>();
    // In the order of `Alias.resolve()`'s own walk, so an anchor counts from where it stands.
    someNode(ctx.doc.contents, (node) => {
      if (isAlias(node)) {
        const target = anchors.get(node.source);
        if (target !== undefined) aliases.set(node, target);
      } else if (node.anchor) {
        anchors.set(node.anchor, node);
      }
      return false;
    });
    ctx.aliases = aliases;
  }
  return ctx.aliases.get(alias);
}

function report(
  ctx: Context,
  node: { range?: [number, number, number] | null } | null | undefined,
  path: string,
  detail: string,
  hint: string | null = null,
  fallbackOffset = 0,
): void {
  const offset = node?.range?.[0] ?? fallbackOffset;
  const pos = ctx.lines.linePos(offset);
  ctx.errors.push(
    new ConfigError(detail, { file: ctx.file, line: pos.line, column: pos.col, path, hint }),
  );
}

function describeNode(node: unknown): string {
  if (node === null || node === undefined) return "nothing";
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return "a list";
  if (isScalar(node)) {
    const v = node.value;
    if (v === null) return "null";
    if (typeof v === "string") return `the string "${v}"`;
    return `${typeof v} ${JSON.stringify(v)}`;
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
};

function validate(node: unknown, schema: Schema, path: string, ctx: Context): unknown {
  if (isAlias(node)) {
    // `*name` reuses an anchored block (shared rules): validate what it points to.
    const target = resolveAlias(ctx, node);
    if (target === undefined) {
      report(ctx, node, path, `Unknown alias "*${node.source}"`, "define the anchor before it");
      return undefined;
    }
    return validate(target, schema, path, ctx);
  }
  const n = node as Node | null | undefined;
  const wrongType = (expected: string, hint: string | null = null) => {
    report(ctx, n, path, `Expected ${expected}, found ${describeNode(n)}`, hint);
    return undefined;
  };
  switch (schema.type) {
    case "string": {
      if (!isScalar(n)) return wrongType("a string", 'write a single value, quoted: "..."');
      let value = n.value;
      // YAML reads `device_id: 2684`, `vendor_id: 0x10de`, `class: 0300` and `slot: 3` as
      // numbers (0x10de as 4318, 0300 as 300): for IDs, classes and slots take the text as written.
      if (schema.format !== undefined && typeof value === "number") {
        const source = (n.srcToken as { source?: unknown } | undefined)?.source;
        if (typeof source === "string") value = source;
      }
      if (typeof value !== "string") return wrongType("a string", 'quote the value: "..."');
      if (schema.enum) {
        if (!schema.enum.includes(value)) {
          const near = nearest(value, schema.enum);
          report(
            ctx,
            n,
            path,
            `Invalid value "${value}": expected one of ${
              schema.enum.map((e) => `"${e}"`).join(", ")
            }`,
            near ? `did you mean "${near}"?` : null,
          );
          return undefined;
        }
        return value;
      }
      if (schema.format) {
        const normal = normaliseFormat(schema.format, value);
        if (normal === null) {
          const near = schema.format === "class" ? nearest(value, Object.keys(CLASS_NAMES)) : null;
          report(
            ctx,
            n,
            path,
            `Invalid ${schema.format} "${value}"`,
            near ? `did you mean "${near}"?` : FORMAT_HINTS[schema.format],
          );
          return undefined;
        }
        return normal;
      }
      return value;
    }
    case "integer": {
      if (!isScalar(n) || typeof n.value !== "number" || !Number.isInteger(n.value)) {
        return wrongType("an integer", "write a whole number without quotes, e.g. 1");
      }
      if (schema.const !== undefined && n.value !== schema.const) {
        report(
          ctx,
          n,
          path,
          `Unsupported value ${n.value}: expected ${schema.const}`,
          `write ${schema.const}`,
        );
        return undefined;
      }
      if (n.value > MAX_INTEGER) {
        // libvirt keeps these numbers (boot order, counts, NUMA nodes) in C ints.
        report(
          ctx,
          n,
          path,
          `Value ${n.value} is too large: the maximum is ${MAX_INTEGER}`,
          `use ${MAX_INTEGER} or less`,
        );
        return undefined;
      }
      if (schema.minimum !== undefined && n.value < schema.minimum) {
        report(
          ctx,
          n,
          path,
          `Value ${n.value} is too small: the minimum is ${schema.minimum}`,
          `use ${schema.minimum} or more`,
        );
        return undefined;
      }
      return n.value;
    }
    case "boolean": {
      if (!isScalar(n) || typeof n.value !== "boolean") {
        return wrongType("true or false", "write true or false without quotes");
      }
      if (schema.const !== undefined && n.value !== schema.const) {
        report(
          ctx,
          n,
          path,
          `Unsupported value ${n.value}: expected ${schema.const}`,
          "omit the key",
        );
        return undefined;
      }
      return n.value;
    }
    case "array": {
      if (!isSeq(n)) return wrongType("a list", 'start each item with "- "');
      return n.items.map((item, i) => validate(item, schema.items, `${path}[${i}]`, ctx));
    }
    case "map": {
      if (!isMap(n)) return wrongType("a mapping", "write NAME: followed by indented keys");
      const out: Record<string, unknown> = {};
      const pattern = new RegExp(schema.keyPattern);
      for (const pair of n.items) {
        const key = isScalar(pair.key) ? pair.key.value : undefined;
        const keyNode = pair.key as Node;
        if (typeof key !== "string" || !pattern.test(key)) {
          report(
            ctx,
            keyNode,
            path,
            `Invalid name ${describeNode(keyNode)}`,
            schema.keyHint ?? "use the libvirt domain name",
          );
          continue;
        }
        out[key] = validate(pair.value, schema.values, path ? `${path}.${key}` : key, ctx);
      }
      return out;
    }
    case "object": {
      if (!isMap(n)) {
        return wrongType(
          "a mapping",
          `write "key: value" pairs: ${Object.keys(schema.properties).join(", ")}`,
        );
      }
      const out: Record<string, unknown> = {};
      const known = Object.keys(schema.properties);
      for (const pair of n.items) {
        const keyNode = pair.key as Node;
        const key = isScalar(keyNode) ? keyNode.value : undefined;
        if (typeof key !== "string") {
          report(
            ctx,
            keyNode,
            path,
            `Invalid key ${describeNode(keyNode)}`,
            "keys are plain words",
          );
          continue;
        }
        const sub = schema.properties[key];
        const subPath = path ? `${path}.${key}` : key;
        if (sub === undefined) {
          const near = nearest(key, known);
          report(
            ctx,
            keyNode,
            subPath,
            `Unknown key "${key}"`,
            near ? `did you mean "${near}"?` : `expected one of ${known.join(", ")}`,
          );
          continue;
        }
        out[key] = validate(pair.value, sub, subPath, ctx);
      }
      for (const required of schema.required ?? []) {
        if (!n.items.some((p) => isScalar(p.key) && p.key.value === required)) {
          report(ctx, n, path, `Missing key "${required}"`, `add "${required}:"`);
        }
      }
      if (schema.minProperties !== undefined && n.items.length < schema.minProperties) {
        report(ctx, n, path, "Empty mapping", `give at least one of ${known.join(", ")}`);
      }
      for (const [a, b] of schema.exclusive ?? []) {
        if (a in out && b in out) {
          report(ctx, n, path, `Keys "${a}" and "${b}" exclude each other`, `keep one of them`);
        }
      }
      return out;
    }
  }
}

function normaliseHosts(
  raw: Record<string, RawHostConfig | undefined>,
  hostsNode: unknown,
  ctx: Context,
): HostConfig[] {
  const hosts: HostConfig[] = [];
  for (const [name, rawHost] of Object.entries(raw)) {
    if (rawHost === undefined) continue;
    const pair = isMap(hostsNode)
      ? hostsNode.items.find((p) => isScalar(p.key) && p.key.value === name)
      : undefined;
    const sysfs = rawHost.sysfs === undefined
      ? null
      : isAbsolute(rawHost.sysfs)
      ? rawHost.sysfs
      : join(dirname(ctx.file), rawHost.sysfs);
    hosts.push({ name, location: location(ctx, pair?.key), uri: rawHost.connect ?? null, sysfs });
  }
  return hosts;
}

/** `host:`/`hosts:` of a VM or rule as a list (validated against the declared hosts). */
function hostReferences(
  raw: { host?: string; hosts?: string[] },
  entryNode: unknown,
  path: string,
  declared: readonly string[] | null,
  ctx: Context,
): string[] | undefined {
  const names = raw.host !== undefined ? [raw.host] : raw.hosts;
  if (names === undefined) return undefined;
  const key = raw.host !== undefined ? "host" : "hosts";
  const keyNode = isMap(entryNode) ? entryNode.get(key, true) : null;
  if (declared === null) {
    report(
      ctx,
      keyNode as Node,
      `${path}.${key}`,
      `No hosts are declared: "${key}" names hosts of the top-level "hosts:"`,
      'add a top-level "hosts:" mapping, or remove this key',
    );
    return undefined;
  }
  if (names.length === 0) {
    report(ctx, keyNode as Node, `${path}.${key}`, "Empty host list", "name at least one host");
    return undefined;
  }
  names.forEach((name, i) => {
    if (declared.includes(name)) return;
    const itemNode = raw.host !== undefined ? keyNode : isSeq(keyNode) ? keyNode.items[i] : keyNode;
    const near = nearest(name, declared);
    report(
      ctx,
      itemNode as Node,
      raw.host !== undefined ? `${path}.host` : `${path}.hosts[${i}]`,
      `Unknown host "${name}"`,
      near
        ? `did you mean "${near}"?`
        : `declared hosts: ${declared.map((d) => `"${d}"`).join(", ")}`,
    );
  });
  return [...new Set(names)];
}

function location(ctx: Context, node: unknown): string {
  const offset = (node as Node | null)?.range?.[0] ?? 0;
  const pos = ctx.lines.linePos(offset);
  return `${ctx.file}:${pos.line}:${pos.col}`;
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

function normaliseMatch(
  raw: RawMatch,
  matchNode: unknown,
  path: string,
  ctx: Context,
): MatchCriteria {
  const m: MatchCriteria = {};
  if (raw.vendor_device_id) {
    const [v, d] = raw.vendor_device_id.split(":") as [string, string];
    m.vendorId = v;
    m.deviceId = d;
  }
  const conflict = (key: string, a: string, b: string) =>
    report(
      ctx,
      matchNode as Node,
      `${path}.${key}`,
      `Conflicting criteria: "${key}" is "${a}" but "vendor_device_id" says "${b}"`,
      "give the ID once",
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
  const { doc, lines } = parseYaml(text);
  const ctx: Context = { file: options.file, doc, lines, errors: [] };
  for (const error of doc.errors) {
    const detail = error.message.replace(/ at line \d+, column \d+:[\s\S]*$/, "");
    const pos = error.linePos?.[0] ?? ctx.lines.linePos(error.pos[0]);
    ctx.errors.push(
      new ConfigError(
        error.code === "DUPLICATE_KEY" ? "Duplicate key: each key may appear once" : detail,
        {
          file: ctx.file,
          line: pos.line,
          column: pos.col,
          path: "",
          hint: error.code === "DUPLICATE_KEY"
            ? "merge the two entries"
            : "check the indentation and quoting here",
        },
      ),
    );
  }
  if (ctx.errors.length > 0) throw new ConfigErrors(ctx.file, ctx.errors);
  if (doc.contents === null) {
    report(ctx, null, "", "Empty config", 'start with "version: 1" and "vms:"');
    throw new ConfigErrors(ctx.file, ctx.errors);
  }
  const raw = validate(doc.contents, CONFIG_SCHEMA, "", ctx) as RawConfig | undefined;
  const config: Config = { file: ctx.file, version: 1, vms: [] };
  let declaredHosts: string[] | null = null;
  if (raw?.hosts !== undefined && isMap(doc.contents)) {
    const hostsNode = doc.contents.get("hosts", true);
    config.hosts = normaliseHosts(
      raw.hosts as Record<string, RawHostConfig | undefined>,
      hostsNode,
      ctx,
    );
    declaredHosts = Object.keys(raw.hosts);
    if (declaredHosts.length === 0) {
      report(
        ctx,
        hostsNode,
        "hosts",
        "Empty host list",
        'declare at least one host, or remove "hosts:"',
      );
    }
  }
  if (raw?.vms && isMap(doc.contents)) {
    const vmsNode = doc.contents.get("vms", true);
    // One index of the VM entries: looking each one up in the node would be quadratic.
    const vmPairs = new Map(
      isMap(vmsNode)
        ? vmsNode.items.flatMap((p) => isScalar(p.key) ? [[String(p.key.value), p] as const] : [])
        : [],
    );
    for (const [vmName, rawVm] of Object.entries(raw.vms)) {
      const vmPair = vmPairs.get(vmName);
      const vmNode = vmPair?.value ?? null;
      const vm: VmConfig = { name: vmName, location: location(ctx, vmPair?.key), rules: [] };
      const vmHosts = rawVm === undefined
        ? undefined
        : hostReferences(rawVm, vmNode, `vms.${vmName}`, declaredHosts, ctx);
      if (vmHosts !== undefined) vm.hosts = vmHosts;
      config.vms.push(vm);
      const devicesNode = isMap(vmNode) ? vmNode.get("devices", true) : null;
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
        const item = isSeq(devicesNode) ? devicesNode.items[i] : null;
        const ruleNode = isAlias(item) ? resolveAlias(ctx, item) : item;
        const path = `vms.${vmName}.devices[${i}]`;
        const matchNode = isMap(ruleNode) ? ruleNode.get("match", true) : null;
        const match = normaliseMatch(rawRule.match, matchNode, `${path}.match`, ctx);
        const ruleHosts = hostReferences(rawRule, ruleNode, path, declaredHosts, ctx);
        let name = rawRule.name ?? deriveRuleName(rawRule.match);
        if (rawRule.name !== undefined && clashes(name, ruleHosts)) {
          report(
            ctx,
            isMap(ruleNode) ? ruleNode.get("name", true) as Node : null,
            `${path}.name`,
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
          location: location(ctx, ruleNode),
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
          const outside = vmHosts === undefined
            ? []
            : ruleHosts.filter((h) => !vmHosts.includes(h));
          if (outside.length > 0) {
            report(
              ctx,
              isMap(ruleNode)
                ? ruleNode.get(rawRule.host !== undefined ? "host" : "hosts", true) as Node
                : null,
              `${path}.${rawRule.host !== undefined ? "host" : "hosts"}`,
              `Rule names host "${outside[0]}" but VM "${vmName}" is not planned there`,
              `the VM is limited to ${vmHosts!.map((h) => `"${h}"`).join(", ")}`,
            );
          }
          rule.hosts = ruleHosts;
        }
        vm.rules.push(rule);
      });
    }
  }
  if (ctx.errors.length > 0) {
    ctx.errors.sort((a, b) => a.line - b.line || a.column - b.column);
    throw new ConfigErrors(ctx.file, ctx.errors);
  }
  return config;
}

/** Reads and parses a config file. Throws {@link ConfigErrors}, or the read error. */
export async function loadConfig(path: string): Promise<Config> {
  const bytes = await Deno.readFile(path);
  // A real config is a few kilobytes; a huge file is a mistake (or hostile) and parsing it would
  // take minutes, so refuse it before parsing.
  if (bytes.length > MAX_CONFIG_BYTES) {
    throw new ConfigErrors(path, [
      new ConfigError(`File too large: ${bytes.length} bytes, the limit is ${MAX_CONFIG_BYTES}`, {
        file: path,
        line: 1,
        column: 1,
        path: "",
        hint: "is this the right file?",
      }),
    ]);
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
    throw new ConfigErrors(path, [
      new ConfigError(`Invalid UTF-8 at byte ${at}`, {
        file: path,
        line,
        column,
        path: "",
        hint: "save the file as UTF-8",
      }),
    ]);
  }
  return parseConfig(text, { file: path });
}

/** The largest config file {@link loadConfig} reads (1 MiB). */
export const MAX_CONFIG_BYTES = 1024 * 1024;

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
