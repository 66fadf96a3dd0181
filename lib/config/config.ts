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
  type Pair,
  parseDocument,
  visit,
  type YAMLMap,
} from "yaml";
import {
  type BooleanSchema,
  CLASS_NAMES,
  classPrefixesOf,
  CONFIG_SCHEMA,
  FORMAT_PATTERNS,
  type IntegerSchema,
  type MapSchema,
  MATCH_SCHEMA,
  NOT_IN_XML_CHARS,
  type ObjectSchema,
  type OneOfSchema,
  type RawConfig,
  type RawHostConfig,
  type RawMatch,
  type RawRule,
  type RawVmConfig,
  type Schema,
  type StringFormat,
  type StringSchema,
} from "./schema.ts";
import { canonicalPciAddress } from "../pci/address.ts";
import { suggestion } from "../render/suggest.ts";
import { asciiQuote } from "../render/terminal.ts";
import { dirname, isAbsolute, join } from "../state/paths.ts";
import type { PciAddress } from "../host/types.ts";

/** One problem in the config file, located in the source. */
export class ConfigError extends Error {
  /** Always `"ConfigError"`. */
  override name = "ConfigError";
  /** The file as given to the loader. */
  file: string;
  /**
   * 1-based line of the problem: the offending node (its key when the key is wrong), or where
   * yaml found a syntax error.
   */
  line: number;
  /** 1-based column of the problem on {@link ConfigError.line}. */
  column: number;
  /** Where in the document: `vms.win10.devices[0].match.vendor_id` (empty for the root). */
  path: string;
  /** What would fix it (`did you mean "vendor_id"?`), or `null`. */
  hint: string | null;

  /**
   * Builds the message `file:line:col: detail at "path" (hint)`; the path part is left out when
   * `path` is empty (the document itself), the hint part when `hint` is absent, `null` or empty.
   */
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
  /** Always `"ConfigErrors"`. */
  override name = "ConfigErrors";
  /** Each problem, in source order. */
  declare errors: ConfigError[];
  /** The file as given to the loader. */
  file: string;

  /** Builds the message: a count line, then each error's message on its own indented line. */
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

/**
 * The normalised `match` block of a rule. A device matches when it satisfies every criterion
 * present; an absent criterion constrains nothing. IDs are 4 lower-case hex digits without `0x`,
 * zero-padded (`0x10DE` and `10de` both give `"10de"`, `86` gives `"0086"`).
 */
export interface MatchCriteria {
  /** PCI vendor ID (`vendor_id`, or the part before `:` of `vendor_device_id`): `"10de"`. */
  vendorId?: string;
  /** PCI device ID (`device_id`, or the part after `:` of `vendor_device_id`): `"2684"`. */
  deviceId?: string;
  /**
   * Host kernel driver as written (`nvidia`, `xhci_hcd`), compared with the driver sysfs names;
   * it still matches a device libvirt has since rebound to `vfio-pci`.
   */
  driver?: string;
  /** PCI subsystem vendor ID (the board maker): `"1043"`. */
  subsystemVendorId?: string;
  /** PCI subsystem device ID: `"87c1"`. */
  subsystemDeviceId?: string;
  /**
   * Class-code prefixes, lower-case hex without `0x`; a device matches when its 6-digit class
   * code starts with any of them. The digits written (`"03"`, `"0c03"`, `"010802"`), or what a
   * class name stands for (`usb` gives `["0c03"]`, `audio` gives `["0401", "0403"]`).
   */
  classPrefixes?: string[];
  /**
   * The `class` value, for messages: the class name in lower case, or the hex digits in lower
   * case without `0x` (with it where the digits spell a class name: `0x3d`, not `3d`). Present
   * exactly when {@link MatchCriteria.classPrefixes} is.
   */
  classText?: string;
  /** Physical slot name as the firmware reports it (`"3"`, `"CPU1 SLOT2"`), compared exactly. */
  slot?: string;
  /**
   * PCIe Device Serial Number: 8 bytes as lower-case hex pairs joined by dashes, like lspci
   * prints it (`"00-11-22-ff-ff-33-44-55"`), whether written with dashes, colons or neither.
   */
  serial?: string;
  /** NUMA node the device is attached to (0 or more). */
  numaNode?: number;
  /** Host PCI address, canonical (`"0000:0b:00.0"`, also when written `0b:00.0`). */
  address?: PciAddress;
}

/**
 * What the start guard does about a problem it finds at a VM's start (`guard:`): `enforce`
 * refuses the start, `warn` lets it go on and logs the refusal, `off` checks nothing.
 */
export type GuardPolicy = "enforce" | "warn" | "off";

/** One rule of a VM, normalised: every optional setting of the file filled with its default. */
export interface DeviceRule {
  /**
   * `name:` as written (spaces and line ends at either end dropped), else derived from the match
   * (`"10de:2684"`, `"vga"`, `"10de:*-nvidia"`).
   * Unique within its VM on any one host: unnamed rules whose derived names clash get `#2`,
   * `#3`, ... in file order.
   */
  name: string;
  /** The VM the rule belongs to (its key under `vms:`). */
  vm: string;
  /** `file:line:col` where the rule's mapping starts (just after its `- `). */
  location: string;
  /** Which host devices the rule selects. */
  match: MatchCriteria;
  /**
   * How many cards (IOMMU groups) the rule must resolve to (`count:`, default 1), or `"all"`
   * (`all: true`): every match, however many.
   */
  count: number | "all";
  /**
   * Whether every other endpoint of each matched device's IOMMU group goes along
   * (`iommu_group:`, default `true`); bridges never do.
   */
  iommuGroup: boolean;
  /**
   * Whether libvirt detaches the device from its host driver when the VM starts (`managed:`,
   * the hostdev's `managed='yes'`; default `true`).
   */
  managed: boolean;
  /**
   * The device's option ROM (`rom:`): `bar` exposes the ROM BAR to the guest (`"on"`) or hides
   * it (`"off"`), `file` is the path of a ROM image presented instead, as written. It applies
   * to the matched devices, not the group members they bring along. Absent: libvirt's default.
   */
  rom?: { bar?: "on" | "off"; file?: string };
  /** Boot position of the rule's first matched device (`boot_order:`, 1 or more); absent: none. */
  bootOrder?: number;
  /**
   * Whether a card's functions stay together in one guest slot, function numbers preserved
   * (`multifunction:`, default `false`).
   */
  multifunction: boolean;
  /**
   * Whether a group holding devices the host likely needs is passed anyway, with a warning
   * instead of a refusal (`allow_host_critical:`, default `false`).
   */
  allowHostCritical: boolean;
  /**
   * Whether the warning for devices without Function Level Reset is silenced
   * (`allow_no_flr:`, default `false`).
   */
  allowNoFlr: boolean;
  /** The start guard's policy for the rule's devices (`guard:`, default its VM's). */
  guard: GuardPolicy;
  /**
   * `vf:`: the rule's match names an SR-IOV physical function, and the VM gets one of its
   * virtual functions: this index (the PF's `virtfnN` link) or `"any"` free one. Absent: the
   * matched devices themselves.
   */
  vf?: number | "any";
  /**
   * How a `vf:` rule's VF is passed (`interface:`): as `<interface type='hostdev'>` with this MAC
   * and VLAN. Present exactly when {@link DeviceRule.vf} is (default `{ mac: "auto" }`).
   */
  interface?: InterfaceSettings;
  /**
   * The hosts this rule applies on (`host:`/`hosts:`, each declared under the top-level `hosts:`,
   * in file order, duplicates dropped); absent: every host its VM is on.
   */
  hosts?: string[];
}

/** The guest NIC settings of a `vf:` rule (`interface:`), normalised. */
export interface InterfaceSettings {
  /**
   * `"auto"` (derived from the host, VM and rule, recorded so it stays), or a unicast MAC in
   * lower case with colons (`52:54:00:12:34:56`).
   */
  mac: string;
  /** VLAN tags libvirt sets on the VF through its PF; absent: none. */
  vlan?: {
    /** The VLAN IDs, as written. */
    tags: number[];
    /** Whether the guest sees tagged frames (`trunk='yes'`), given or implied by several tags. */
    trunk: boolean;
  };
}

/** One VM of the config: a libvirt domain and the rules for the devices it gets. */
export interface VmConfig {
  /** The libvirt domain name (its key under `vms:`). */
  name: string;
  /** `file:line:col` of the VM's key under `vms:`. */
  location: string;
  /** Its rules (`devices:`), in file order; empty when it gets no device. */
  rules: DeviceRule[];
  /**
   * The start guard's policy for the VM (`guard:`, default `enforce`): its rules' default, and
   * the policy of hostdevs no rule recorded (hand-added). The parser always sets it; absent (a
   * VM built in code) means `enforce`.
   */
  guard?: GuardPolicy;
  /**
   * The hosts this VM is planned on (`host:`/`hosts:`, each declared under the top-level
   * `hosts:`, in file order, duplicates dropped); absent: every host.
   */
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
  /** How many backups of each VM `apply` keeps there (`keep_backups:`), or `null`: the default. */
  keepBackups: number | null;
}

/** A validated, normalised config. */
export interface Config {
  /** The file as given to the loader (the `file` option of {@link parseConfig}). */
  file: string;
  /** The config format version; 1 is the only one. */
  version: 1;
  /** `true` for the shipped example (`example: true`): `apply` refuses it. Absent otherwise. */
  example?: true;
  /** The VMs under `vms:`, in file order. */
  vms: VmConfig[];
  /**
   * The top-level `hosts:` in file order (a process plans one: `lib/config/host_section.ts`);
   * absent: the file is for whichever host runs it.
   */
  hosts?: HostConfig[];
  /** `file:line:col` of the top-level `hosts:` key, with {@link Config.hosts}. */
  hostsLocation?: string;
  /**
   * Set on the config one host is planned with (`configForHost`): that host's section name, and
   * the hosts of each VM of the file planned only elsewhere (for messages about a VM dropped here
   * that the file still names). Absent: the file as read.
   */
  section?: { host: string; elsewhere: Record<string, string[]> };
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

/**
 * A step to a mapping's entry by its place: a key that is itself a mapping or a list (`? [a, b]`)
 * reads as a new object each time, so it cannot be found again by its value.
 */
class EntryAt {
  constructor(readonly index: number) {}
}

/** The step to entry `index` of a mapping whose key is `key`: by value when YAML can find it so. */
function keyStep(key: unknown, index: number): unknown {
  return key !== null && typeof key === "object" ? new EntryAt(index) : key;
}

/** `vms.win10.devices[0].match` */
function showPath(steps: Steps): string {
  // yaml reads a merge key as the symbol `<<`.
  const text = (step: unknown) => typeof step === "symbol" ? step.description : String(step);
  return steps.map((step, i) =>
    typeof step === "number" ? `[${step}]` : i === 0 ? text(step) : `.${text(step)}`
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
      const pair = step instanceof EntryAt
        ? node.items[step.index]
        : node.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === step);
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

/**
 * Reports a problem at the node `at` (its key with `key`), showing `path` (default: `at`). Gives
 * `undefined`, what {@link check} returns for a value that does not fit: `return report(...)`.
 */
function report(
  ctx: Context,
  at: Steps,
  detail: string,
  hint: string | null,
  options: { key?: boolean; path?: Steps } = {},
): undefined {
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

/** Whether a pair with these ancestors (as `visit()` gives them) is an entry of `vms:` or `hosts:`. */
function isNameKey(ancestors: readonly unknown[]): boolean {
  // The document, its root mapping, the `vms:` pair, its mapping.
  const owner = ancestors.length === 4 ? ancestors[2] : undefined;
  return isPair(owner) && isScalar(owner.key) &&
    (owner.key.value === "vms" || owner.key.value === "hosts");
}

/**
 * Whether a pair with these ancestors (as `visit()` gives them) is a VM's or rule's `host:` or
 * `hosts:`: below the root, where the top-level `hosts:` declares them.
 */
function isHostReference(pair: Pair, ancestors: readonly unknown[]): boolean {
  return ancestors.length > 2 && isScalar(pair.key) &&
    (pair.key.value === "host" || pair.key.value === "hosts");
}

/**
 * Prepares the parsed document for {@link Document.toJS}: takes IDs, classes and slots, and the
 * names of VMs and hosts (declared or named by `host:`/`hosts:`), as written (YAML reads
 * `vendor_id: 0x10de` as 4318, `class: 0300` as 300 and a VM named `100:` as a number), indexes
 * what each alias points to (for positions) and reports aliases without an anchor.
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
    Pair(_, pair, ancestors) {
      const { key, value } = pair;
      // yaml reads a merge key (`<<`) as a symbol, and throws an unlocated error at `toJS` for a
      // merge of anything but mappings.
      const merge = isScalar(key) && typeof key.value === "symbol";
      if (merge && !mergesMappings(value, anchors)) {
        errorAt(
          ctx,
          isNode(value) ? value : key,
          "",
          `A merge key ("<<") takes a mapping or a list of mappings`,
          "merge an anchored mapping (<<: *name), or write the keys out",
        );
      }
      if (
        isScalar(value) && typeof value.value === "number" &&
        isScalar(key) && FORMATTED_KEYS.has(key.value as string)
      ) {
        value.value = value.source;
      }
      if (isHostReference(pair, ancestors)) {
        // `host: 101` names the host declared as `101:`, which is "101" (below), not the number.
        const names = isSeq(value) ? value.items : [value];
        for (const name of names) {
          if (isScalar(name) && ["number", "boolean"].includes(typeof name.value)) {
            name.value = name.source;
          }
        }
      }
      // A VM or host named `100:` is "100" (YAML reads the number 100, `1e3` as 1000, `true` as a
      // boolean): a libvirt domain may have such a name, and JSON's keys are strings anyway.
      if (isScalar(key) && !merge && typeof key.value !== "string" && isNameKey(ancestors)) {
        key.value = key.source;
        // yaml compared it as a number: `100:` beside `"100":` is a duplicate only now.
        const siblings = (ancestors[3] as YAMLMap).items;
        const twin = siblings.find((p) =>
          p !== pair && isScalar(p.key) && p.key.value === key.value
        );
        if (twin !== undefined) {
          // Located at the second of the two, as yaml locates its own.
          const second = siblings.indexOf(twin) > siblings.indexOf(pair) ? twin.key : key;
          errorAt(ctx, second as Node, "", DUPLICATE_KEY[0], DUPLICATE_KEY[1]);
        }
      }
    },
  });
  // yaml compares only keys written out: a key written as an alias (`*k :`) that repeats another
  // one of its mapping would replace it silently (`{ &v vendor_id: "10de", *v : "1002" }` matched
  // 1002). Duplicates written out were reported above.
  visit(ctx.doc, {
    Map(_, map) {
      // Each key's value, and whether one of its uses was an alias.
      const seen = new Map<unknown, boolean>();
      // yaml takes a second merge key without a word and keeps the first one's keys: the second
      // (`<<: *gpu` then `<<: { device_id: "5678" }`) changed nothing.
      const merges = map.items.filter(({ key }) => isScalar(key) && typeof key.value === "symbol");
      for (const { key } of merges.slice(1)) {
        errorAt(
          ctx,
          key as Node,
          "",
          'Duplicate merge key ("<<"): a mapping takes one',
          "merge a list instead: <<: [*first, *second], the first one's keys win",
        );
      }
      for (const { key } of map.items) {
        const written = isAlias(key) ? ctx.aliases.get(key) : key;
        if (!isScalar(written)) continue;
        const earlier = seen.get(written.value);
        if (earlier !== undefined && (earlier || isAlias(key))) {
          errorAt(ctx, key as Node, "", DUPLICATE_KEY[0], DUPLICATE_KEY[1]);
        }
        seen.set(written.value, (earlier ?? false) || isAlias(key));
      }
    },
  });
}

/**
 * Whether a merge key's value is a mapping, or a list of them (each perhaps an alias); an alias
 * without an anchor counts as one, as it is reported as such.
 */
function mergesMappings(value: unknown, anchors: ReadonlyMap<string, Node>): boolean {
  const mapping = (node: unknown) =>
    isAlias(node) ? !anchors.has(node.source) || isMap(anchors.get(node.source)) : isMap(node);
  const source = isAlias(value) ? anchors.get(value.source) : value;
  if (isAlias(value) && source === undefined) return true;
  return isSeq(source) ? source.items.every(mapping) : mapping(source);
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
  // String, not JSON: `.inf` and `.nan` are numbers to YAML, and null to JSON.
  if (typeof value === "number" || typeof value === "boolean") return `${typeof value} ${value}`;
  return "an unsupported value";
}

/** Normalises a value of a string format, or returns `null` when it does not fit. */
function normaliseFormat(format: StringFormat, text: string): string | null {
  const value = text.trim();
  if (format === "class") {
    const name = value.toLowerCase();
    if (Object.hasOwn(CLASS_NAMES, name)) return name;
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
    case "class": {
      // Written with 0x it is hex: `0x3d` keeps its 0x, or it would read as the name `3d`.
      const digits = hex(value);
      return Object.hasOwn(CLASS_NAMES, digits) ? `0x${digits}` : digits;
    }
    case "pci-address":
      return canonicalPciAddress(value);
    case "serial": {
      const digits = value.replace(/[-:]/g, "").toLowerCase();
      return digits.match(/../g)!.join("-");
    }
    case "absolute-path":
    case "name":
      return value;
    case "mac":
      return value === "auto" ? value : value.replace(/-/g, ":").toLowerCase();
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
  "name": "expected a rule name on one line, with no tab",
  "absolute-path": 'expected an absolute path such as "/usr/share/vgabios/gpu.rom"',
  "mac": 'expected "auto" or a MAC address such as "52:54:00:12:34:56"',
};

/**
 * Checks `value` (from {@link toData}) against `schema`, reporting every problem; returns the
 * value as plain objects with formats normalised, or `undefined` where it does not fit.
 */
function check(value: unknown, schema: Schema, at: Steps, ctx: Context): unknown {
  switch (schema.type) {
    case "string":
      return checkString(value, schema, at, ctx);
    case "integer":
      return checkInteger(value, schema, at, ctx);
    case "boolean":
      return checkBoolean(value, schema, at, ctx);
    case "array":
      if (!Array.isArray(value)) {
        return wrongType(ctx, at, "a list", value, 'start each item with "- "');
      }
      return value.map((item, i) => check(item, schema.items, [...at, i], ctx));
    case "map":
      return checkMap(value, schema, at, ctx);
    case "object":
      return checkObject(value, schema, at, ctx);
    case "oneOf":
      return checkOneOf(value, schema, at, ctx);
  }
}

/** The schema types a value of this kind (from {@link toData}) may fit. */
function kindsOf(value: unknown): Schema["type"][] {
  return typeof value === "string"
    ? ["string"]
    : typeof value === "number"
    ? ["integer"]
    : typeof value === "boolean"
    ? ["boolean"]
    : Array.isArray(value)
    ? ["array"]
    : value instanceof Map
    ? ["object", "map"]
    : [];
}

/** The kind of value `schema` takes, as an error names it: "an integer", "a list". */
function expectedKind(schema: Schema): string {
  return schema.type === "integer"
    ? "an integer"
    : schema.type === "boolean"
    ? "true or false"
    : schema.type === "object" || schema.type === "map"
    ? "a mapping"
    : schema.type === "array"
    ? "a list"
    : `a ${schema.type}`;
}

/** The option of `schema` for the kind of `value`, checked; reported when no option fits. */
function checkOneOf(value: unknown, schema: OneOfSchema, at: Steps, ctx: Context): unknown {
  const kinds = kindsOf(value);
  const option = schema.options.find((o) => kinds.includes(o.type));
  // A quoted number (`vf: "0"`, `"-1"`, `"1.5"`) is a string to YAML: the string option alone
  // ("any") would be named as expected, as if no index could be given.
  const quotedNumber = typeof value === "string" && value.trim() !== "" &&
    Number.isFinite(Number(value)) && option?.type === "string" && option.enum !== undefined &&
    !option.enum.includes(value) && schema.options.some((o) => o.type === "integer");
  if (option !== undefined && !quotedNumber) return check(value, option, at, ctx);
  const expected = schema.options.map((o) =>
    o.type === "string" && o.enum ? o.enum.map((e) => `"${e}"`).join(" or ") : expectedKind(o)
  );
  return wrongType(
    ctx,
    at,
    expected.join(" or "),
    value,
    quotedNumber && /^[0-9]+$/.test(value)
      ? `write the number without quotes: ${value}`
      : schema.description,
  );
}

/** Reports the node at `at` as not the `expected` kind of value (`value` is what it holds). */
function wrongType(
  ctx: Context,
  at: Steps,
  expected: string,
  value: unknown,
  hint: string,
): undefined {
  return report(ctx, at, `Expected ${expected}, found ${describe(value)}`, hint);
}

/** A string: one of `enum`, or normalised by its format. */
function checkString(value: unknown, schema: StringSchema, at: Steps, ctx: Context): unknown {
  if (typeof value !== "string") {
    const single = value instanceof Map || Array.isArray(value);
    if (schema.enum) {
      // Quoted, `guard: false` or `bar: 0` is no value of the field either: name its values.
      const values = schema.enum.map((e) => `"${e}"`).join(", ");
      // `bar: false`, or `guard: off` under `%YAML 1.1`, which reads it as false.
      const word = value === false ? "off" : value === true ? "on" : null;
      const hint = single
        ? "write a single value"
        : word !== null && schema.enum.includes(word)
        ? `write "${word}"`
        : null;
      return report(ctx, at, `Expected one of ${values}, found ${describe(value)}`, hint);
    }
    const hint = single
      ? 'write a single value, quoted: "..."'
      : quoteMisread(misread(ctx, at, value)) ?? 'quote the value: "..."';
    return wrongType(ctx, at, "a string", value, hint);
  }
  if (schema.enum) {
    if (schema.enum.includes(value)) return value;
    const expected = schema.enum.map((e) => `"${e}"`).join(", ");
    return report(
      ctx,
      at,
      `Invalid value "${value}": expected one of ${expected}`,
      suggestion(value, schema.enum),
    );
  }
  if (schema.minLength !== undefined && value === "") {
    // Like `--connect ''`: an empty URI or tree would silently mean libvirt's default or the
    // config's own folder.
    return report(ctx, at, "Empty value", "give a value, or remove the key for the default");
  }
  if (schema.format === undefined) return xmlCarriable(value, at, ctx);
  const normal = normaliseFormat(schema.format, value);
  if (normal !== null) return xmlCarriable(normal, at, ctx);
  const near = schema.format === "class" ? suggestion(value, Object.keys(CLASS_NAMES)) : null;
  // Escaped where the format is ASCII: "10de:1b8О" (a Cyrillic "О") reads as a valid ID. A path
  // or a slot name may hold any letters, which read as the user wrote them.
  const anyText = schema.format === "absolute-path" || schema.format === "slot" ||
    schema.format === "name";
  const shown = anyText ? JSON.stringify(value) : asciiQuote(value);
  return report(ctx, at, `Invalid ${schema.format} ${shown}`, near ?? FORMAT_HINTS[schema.format]);
}

/**
 * What XML 1.0 cannot hold, not even as a character reference: C0 controls but tab, newline and
 * carriage return, U+FFFE, U+FFFF and unpaired surrogates. A rule's name and ROM file are written
 * into the domain's definition, which libvirt then refuses at define (C cuts a NUL short), and
 * no other value of the config has a use for them: a NUL in a path stopped `plan` unlocated.
 */
const NOT_IN_XML = new RegExp(
  `${NOT_IN_XML_CHARS}|[\\ud800-\\udbff](?![\\udc00-\\udfff])|(?<![\\ud800-\\udbff])[\\udc00-\\udfff]`,
);

/** `value`, or reported (and `undefined`) when it holds a character of {@link NOT_IN_XML}. */
function xmlCarriable(value: string, at: Steps, ctx: Context): string | undefined {
  const bad = NOT_IN_XML.exec(value);
  if (bad === null) return value;
  const code = bad[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0");
  return report(
    ctx,
    at,
    `Invalid character U+${code} in "${value}"`,
    "no value may hold a control character but tab and newline (libvirt's XML cannot): remove it",
  );
}

/**
 * A number as written at `at`: `123456789012345678901234567890` read as a float printed as
 * `1.2345678901234568e+29`, a number the user never wrote.
 */
function writtenNumber(ctx: Context, at: Steps, value: number): string {
  const node = nodeAt(ctx, at);
  return isScalar(node) && node.value === value && node.source ? node.source : String(value);
}

/** How YAML read a plain scalar written otherwise, from {@link misread}. */
interface Misreading {
  /** The text as written: `52:54:00:12:34:56`. */
  source: string;
  /** What YAML made of it: `YAML 1.1 reads 1:30 as the sexagesimal (base 60) number 90`. */
  reading: string;
  /** Base 60 (`1:30`) and base 8 (`010`, not `07`) are YAML 1.1's alone: YAML 1.2 reads others. */
  only11: boolean;
}

/**
 * How YAML read the text written at `at` as `value`, a number, a boolean, null or a date not
 * written as it prints: `%YAML 1.1` reads `52:54:00:12:34:56` as the base-60 number 41135085296
 * and `yes` as true, which "found number 41135085296" left the user to work out.
 */
function misread(ctx: Context, at: Steps, value: unknown): Misreading | null {
  const node = nodeAt(ctx, at);
  if (!isScalar(node) || node.value !== value || !node.source) return null;
  const source = node.source;
  if (source === String(value)) return null;
  const yaml11 = ctx.doc.directives?.yaml.version === "1.1";
  const sexagesimal = typeof value === "number" && source.includes(":");
  const octal = yaml11 && typeof value === "number" && /^[-+]?0[0-7_]+$/.test(source);
  const read = value === null
    ? "null"
    : value instanceof Date
    ? "a date"
    : typeof value === "boolean"
    ? `the boolean ${value}`
    : typeof value !== "number"
    ? null
    : sexagesimal
    ? `the sexagesimal (base 60) number ${value}`
    : octal
    ? `the octal number ${value}`
    : `the number ${value}`;
  if (read === null) return null;
  const reading = `${yaml11 ? "YAML 1.1" : "YAML"} reads ${source} as ${read}`;
  // `07` is 7 to YAML 1.2 too: only an octal it reads otherwise (`010`, `0_7`) is ambiguous.
  return { source, reading, only11: sexagesimal || (octal && Number(source) !== value) };
}

/** What to write for a text YAML misread where a string goes: the text, quoted. */
function quoteMisread(misreading: Misreading | null): string | null {
  return misreading && `${misreading.reading}: quote it, "${misreading.source}"`;
}

/** An integer within the schema's bounds and {@link MAX_INTEGER}. */
function checkInteger(value: unknown, schema: IntegerSchema, at: Steps, ctx: Context): unknown {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    return wrongType(ctx, at, "an integer", value, "write a whole number without quotes, e.g. 1");
  }
  // `vf: 1:2` passed VF 62, `boot_order: 010` was 8: a number YAML 1.2 reads otherwise, or not
  // at all, is a guess at what was meant. Looked up only under 1.1, the only YAML that does it.
  const misreading = ctx.doc.directives?.yaml.version === "1.1" ? misread(ctx, at, value) : null;
  if (misreading?.only11) {
    return report(
      ctx,
      at,
      `Ambiguous number ${misreading.source}`,
      `${misreading.reading}: write the number meant in decimal`,
    );
  }
  // Looked up only for a refusal: finding the node walks the document.
  const shown = () => writtenNumber(ctx, at, value);
  if (schema.const !== undefined && value !== schema.const) {
    return report(
      ctx,
      at,
      `Unsupported value ${shown()}: expected ${schema.const}`,
      `write ${schema.const}`,
    );
  }
  if (value > MAX_INTEGER) {
    // libvirt keeps these numbers (boot order, counts, NUMA nodes) in C ints.
    return report(
      ctx,
      at,
      `Value ${shown()} is too large: the maximum is ${MAX_INTEGER}`,
      `use ${MAX_INTEGER} or less`,
    );
  }
  if (schema.maximum !== undefined && value > schema.maximum) {
    return report(
      ctx,
      at,
      `Value ${shown()} is too large: the maximum is ${schema.maximum}`,
      `use ${schema.maximum} or less`,
    );
  }
  if (schema.minimum !== undefined && value < schema.minimum) {
    return report(
      ctx,
      at,
      `Value ${shown()} is too small: the minimum is ${schema.minimum}`,
      `use ${schema.minimum} or more`,
    );
  }
  return value;
}

/** `true` or `false`, or only the schema's `const`. */
function checkBoolean(value: unknown, schema: BooleanSchema, at: Steps, ctx: Context): unknown {
  if (typeof value !== "boolean") {
    return wrongType(ctx, at, "true or false", value, booleanHint(value));
  }
  if (schema.const !== undefined && value !== schema.const) {
    return report(ctx, at, `Unsupported value ${value}: expected ${schema.const}`, "omit the key");
  }
  return value;
}

/**
 * The words YAML 1.1 read as booleans (as Ansible and PyYAML still do), each with the boolean it
 * meant: YAML 1.2 reads them as text, so `managed: no` is the word "no".
 */
const YAML_11_BOOLEANS: Readonly<Record<string, boolean>> = {
  y: true,
  yes: true,
  true: true,
  on: true,
  n: false,
  no: false,
  false: false,
  off: false,
};

/** What to write for `value`, which is no boolean, where a boolean is expected. */
function booleanHint(value: unknown): string {
  const word = typeof value === "string" ? value.toLowerCase() : "";
  if (!Object.hasOwn(YAML_11_BOOLEANS, word)) return "write true or false without quotes";
  const meant = YAML_11_BOOLEANS[word];
  return word === String(meant)
    ? `write ${meant} without quotes`
    : `write ${meant}: YAML 1.2 reads "${value}" as text`;
}

/** A mapping of free-form names: each name must fit the key pattern, each value the schema. */
function checkMap(value: unknown, schema: MapSchema, at: Steps, ctx: Context): unknown {
  if (!(value instanceof Map)) {
    return wrongType(ctx, at, "a mapping", value, "write NAME: followed by indented keys");
  }
  const pattern = new RegExp(schema.keyPattern);
  // A Map, not an object: an object lists a VM named "100" before "web" written above it (integer
  // keys first), and a Map takes a VM named "__proto__" as an entry, not the prototype.
  const entries = new Map<string, unknown>();
  for (const [index, [key, item]] of [...value].entries()) {
    if (typeof key === "string" && pattern.test(key)) {
      entries.set(key, check(item, schema.values, [...at, key], ctx));
    } else {
      const hint = schema.keyHint ?? "use the libvirt domain name";
      const name = typeof key === "string" ? ` ${JSON.stringify(key)}` : `: ${describe(key)}`;
      const step = keyStep(key, index);
      report(ctx, [...at, step], `Invalid name${name}`, hint, { key: true, path: at });
    }
  }
  return entries;
}

/** A mapping of known keys: each key checked, then the required, minimum and exclusive keys. */
function checkObject(value: unknown, schema: ObjectSchema, at: Steps, ctx: Context): unknown {
  const known = Object.keys(schema.properties);
  if (!(value instanceof Map)) {
    // A key with nothing after it (`hv1:` declaring a host with no settings) is null in YAML.
    const empty = value === null && (schema.required ?? []).length === 0 &&
      (schema.minProperties ?? 0) === 0;
    const hint = `write ${empty ? "{} for none, or " : ""}"key: value" pairs: ${known.join(", ")}`;
    return wrongType(ctx, at, "a mapping", value, hint);
  }
  const out: Record<string, unknown> = {};
  for (const [index, [key, item]] of [...value].entries()) {
    if (typeof key !== "string") {
      const detail = `Invalid key: ${describe(key)}`;
      const step = keyStep(key, index);
      report(ctx, [...at, step], detail, "keys are plain words", { key: true, path: at });
    } else if (schema.removed !== undefined && Object.hasOwn(schema.removed, key)) {
      report(ctx, [...at, key], `Key "${key}" was removed`, schema.removed[key]!, { key: true });
    } else if (schema.misplaced !== undefined && Object.hasOwn(schema.misplaced, key)) {
      const { where, hint } = schema.misplaced[key]!;
      const here = hint.replaceAll("{here}", String(at.at(-1) ?? ""));
      report(ctx, [...at, key], `Key "${key}" does not go in ${where}`, here, { key: true });
    } else if (!Object.hasOwn(schema.properties, key)) {
      const hint = suggestion(key, known) ?? `expected one of ${known.join(", ")}`;
      report(ctx, [...at, key], `Unknown key "${key}"`, hint, { key: true });
    } else {
      const moved = misplaced(item, key, schema);
      out[key] = moved === null
        ? check(item, schema.properties[key]!, [...at, key], ctx)
        : wrongType(ctx, [...at, key], expectedKind(schema.properties[key]!), item, moved);
    }
  }
  checkKeySet(value, schema, at, ctx);
  return out;
}

/**
 * What to write when `value` does not fit `key` but belongs to the key it excludes: `count: all`
 * means `all: true`, `all: 3` is `count: 3`, `host: [a, b]` is a list for `hosts:`, `hosts: hv1`
 * one name for `host:`.
 * The schema's own hint ("write a whole number") led away from the key that takes it.
 */
function misplaced(value: unknown, key: string, schema: ObjectSchema): string | null {
  const pair = schema.exclusive?.find((p) => p.includes(key));
  const other = pair?.find((k) => k !== key);
  if (other === undefined) return null;
  const own = schema.properties[key]!;
  const theirs = schema.properties[other]!;
  if (theirs.type === "boolean") {
    // `count: all` (or `All`) and `count: true` mean `all: true`; `count: false` means nothing.
    return value === true || (typeof value === "string" && value.toLowerCase() === other)
      ? `write ${other}: true in place of ${key}: ${value}`
      : null;
  }
  const kinds = kindsOf(value);
  if (kinds.includes(own.type) || !kinds.includes(theirs.type)) return null;
  if (Array.isArray(value)) {
    return `a list goes under "${other}:": write ${other}: in place of ${key}:`;
  }
  return typeof value === "string"
    ? `one value goes under "${other}:": write ${other}: ${value}, or ${key}: [${value}]`
    : `write ${other}: ${value} in place of ${key}: ${value}`;
}

/** Reports required keys missing, too few keys, and keys that exclude each other. */
function checkKeySet(
  value: Map<unknown, unknown>,
  schema: ObjectSchema,
  at: Steps,
  ctx: Context,
): void {
  for (const required of schema.required ?? []) {
    if (!value.has(required)) report(ctx, at, `Missing key "${required}"`, `add "${required}:"`);
  }
  if (schema.minProperties !== undefined && value.size < schema.minProperties) {
    const known = Object.keys(schema.properties);
    report(ctx, at, "Empty mapping", `give at least one of ${known.join(", ")}`);
  }
  for (const [a, b] of schema.exclusive ?? []) {
    if (value.has(a) && value.has(b)) {
      report(ctx, at, `Keys "${a}" and "${b}" exclude each other`, "keep one of them");
    }
  }
}

function normaliseHosts(
  raw: ReadonlyMap<string, RawHostConfig | undefined>,
  ctx: Context,
): HostConfig[] {
  const hosts: HostConfig[] = [];
  for (const [name, rawHost] of raw) {
    if (rawHost === undefined) continue;
    const sysfs = rawHost.sysfs === undefined
      ? null
      : isAbsolute(rawHost.sysfs)
      ? rawHost.sysfs
      : join(dirname(ctx.file), rawHost.sysfs);
    // Host names ignore case (DNS, Ansible's inventory), the match of a section does not: two
    // sections of one machine, and which one it plans hangs on how its kernel spells the name.
    const same = hosts.find((h) => h.name.toLowerCase() === name.toLowerCase());
    if (same !== undefined) {
      report(
        ctx,
        ["hosts", name],
        `Host "${name}" is "${same.name}" (${same.location}) in another case`,
        "a machine plans only the section spelled as uname -n prints its name: merge the two",
        { key: true },
      );
    }
    hosts.push({
      name,
      location: location(ctx, ["hosts", name], true),
      uri: rawHost.connect ?? null,
      sysfs,
      keepBackups: rawHost.keep_backups ?? null,
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
  // An item that is no string (`hosts: [hv1, {}]`) was reported by the schema check: no name.
  (names as (string | undefined)[]).forEach((name, i) => {
    if (name === undefined || declared.includes(name)) return;
    report(
      ctx,
      raw.host !== undefined ? [...at, "host"] : [...at, "hosts", i],
      `Unknown host "${name}"`,
      suggestion(name, declared) ?? `declared hosts: ${declared.map((d) => `"${d}"`).join(", ")}`,
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
  // Located at the key that contradicts, not at the start of the `match` block.
  const conflict = (key: string, a: string, b: string) =>
    report(
      ctx,
      [...at, key],
      `Conflicting criteria: "${key}" is "${a}" but "vendor_device_id" says "${b}"`,
      "give the ID once",
      { key: true },
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
    m.classPrefixes = [...(classPrefixesOf(raw.class) ?? [])];
  }
  if (raw.slot !== undefined) m.slot = raw.slot;
  if (raw.serial !== undefined) m.serial = raw.serial;
  if (raw.numa_node !== undefined) m.numaNode = raw.numa_node;
  if (raw.address !== undefined) m.address = raw.address;
  return m;
}

/** A duplicate key's message and hint, whether yaml or {@link prepare} found it. */
const DUPLICATE_KEY = ["Duplicate key: each key may appear once", "merge the two entries"] as const;

/**
 * yaml's own errors (syntax, duplicate keys, nesting) as config errors, and the tags it does not
 * know: yaml only warns of those and reads the value untagged (`connect: !env URI` read as the
 * URI "URI", `driver: !env GPU` as a driver "GPU"), a meaning the tag's writer did not give it.
 */
function yamlErrors(ctx: Context, text: string): void {
  // Nesting too deep overflows the stack once per level, and leaves the rest unparsed: say it once.
  const deep = ctx.doc.errors.find((e) => e.code === "RESOURCE_EXHAUSTION");
  const unknownTags = ctx.doc.warnings.filter((w) => w.code === "TAG_RESOLVE_FAILED");
  for (const error of deep ? [deep] : [...ctx.doc.errors, ...unknownTags]) {
    const [detail, hint] = error.code === "DUPLICATE_KEY"
      ? DUPLICATE_KEY
      : error.code === "MULTIPLE_DOCS"
      // yaml's own message asks for `YAML.parseAllDocuments()`, an API the user cannot call.
      ? [
        "A second YAML document starts here: a config is one document",
        'keep one: a "---" line starts another document, and so does content after a "..." line',
      ]
      : error.code === "TAG_RESOLVE_FAILED"
      ? tagProblem(ctx, text.slice(error.pos[0], error.pos[1]))
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
 * What is wrong with a tag yaml could not resolve: one of YAML's own (`!!int`) on a value it does
 * not fit (`!!int 2.0`, `!!bool yes`), which yaml warns of alike, or a tag the config does not
 * know.
 */
function tagProblem(ctx: Context, tag: string): [string, string] {
  const name = ctx.doc.directives?.tagName(tag, () => {});
  if (name && ctx.doc.schema.tags.some((t) => t.tag === name)) {
    return [
      `The value does not fit its tag "${tag}"`,
      "write a value of that type, or remove the tag",
    ];
  }
  return [
    `Unsupported tag "${tag}"`,
    "the config is plain YAML: remove the tag and write the value itself",
  ];
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
  const { ctx, data } = readDocument(text, options.file);
  const raw = check(data, CONFIG_SCHEMA, [], ctx) as RawConfig | undefined;
  const config = normaliseConfig(raw, ctx);
  if (ctx.errors.length > 0) {
    ctx.errors.sort((a, b) => a.line - b.line || a.column - b.column);
    throw new ConfigErrors(ctx.file, ctx.errors);
  }
  return config;
}

/**
 * The YAML of `text` as data, with the context that locates its nodes. Throws
 * {@link ConfigErrors} when the YAML itself is unusable (syntax, duplicate keys, unknown tags, no
 * content, unknown aliases, alias bombs), before any schema check.
 */
function readDocument(written: string, file: string): { ctx: Context; data: unknown } {
  // A byte order mark (Notepad's UTF-8) is no column: editors count line 1 from after it.
  const unmarked = written.startsWith("\ufeff") ? written.slice(1) : written;
  // A lone CR (classic Mac OS line ends) breaks a line in YAML 1.2, but npm yaml reads the whole
  // file as one line ("Nested mappings are not allowed in compact mappings" at 1:10, 1:16, ...).
  // One character for one: every line and column stays where the editor shows it.
  const text = unmarked.replace(/\r(?!\n)/g, "\n");
  const lines = new LineCounter();
  // yaml refuses duplicate keys itself (`uniqueKeys`, on by default). Merge keys (`<<: *base`)
  // merge under YAML 1.2 too, as under `%YAML 1.1` and in editors checking the schema: else `<<`
  // was an unknown key ("did you mean vf?") and, under `vms:`, a VM named "<<".
  const doc = parseDocument(text, {
    lineCounter: lines,
    prettyErrors: false,
    merge: true,
    uniqueKeys: sameKey,
  });
  const ctx: Context = { file, doc, lines, aliases: new Map(), errors: [] };
  const stopOnErrors = () => {
    if (ctx.errors.length > 0) throw new ConfigErrors(ctx.file, ctx.errors);
  };
  yamlErrors(ctx, text);
  stopOnErrors();
  // A "---" or "..." line with nothing after it but comments is a null written as nothing.
  const nothing = doc.contents === null ||
    (isScalar(doc.contents) && doc.contents.value === null && doc.contents.source === "");
  if (nothing) {
    errorAt(ctx, null, "", "Empty config", 'start with "version: 1" and "vms:"');
    stopOnErrors();
  }
  prepare(ctx);
  stopOnErrors();
  const data = toData(ctx);
  stopOnErrors();
  return { ctx, data };
}

/**
 * Whether two keys of one mapping are one key to yaml's duplicate check: as yaml compares them (by
 * the value read), but a number, boolean or null written two ways is two keys. A VM or host name
 * is taken as written ({@link prepare}), so `yes:` and `on:` are two VMs: under `%YAML 1.1` yaml
 * read both as true and refused the second as a duplicate. Elsewhere such keys are refused anyway.
 */
function sameKey(a: Node, b: Node): boolean {
  if (a === b) return true;
  if (!isScalar(a) || !isScalar(b) || a.value !== b.value) return false;
  return typeof a.value === "string" || typeof a.value === "symbol" || a.source === b.source;
}

/** The checked config normalised: hosts, then each VM with its rules, in file order. */
function normaliseConfig(raw: RawConfig | undefined, ctx: Context): Config {
  const config: Config = { file: ctx.file, version: 1, vms: [] };
  if (raw?.example === true) config.example = true;
  let declared: string[] | null = null;
  if (raw?.hosts !== undefined) {
    config.hosts = normaliseHosts(raw.hosts, ctx);
    config.hostsLocation = location(ctx, ["hosts"], true);
    declared = [...raw.hosts.keys()];
    // Names refused (`"a b":`) were reported: the list is empty only when nothing is under it.
    const written = nodeAt(ctx, ["hosts"]);
    if (isMap(written) && written.items.length === 0) {
      report(ctx, ["hosts"], "Empty host list", 'declare at least one host, or remove "hosts:"');
    }
  }
  for (const [name, rawVm] of raw?.vms ?? []) {
    config.vms.push(normaliseVm(name, rawVm, declared, ctx));
  }
  return config;
}

/** What normalising the rules of one VM shares. */
interface VmScope {
  /** The VM the rules belong to (its name and hosts). */
  vm: VmConfig;
  /** The names under the top-level `hosts:`, or `null` when there is none. */
  declared: readonly string[] | null;
  /**
   * The rule names taken so far, each with the hosts of every rule that took it (`undefined`:
   * every host). One name may appear on disjoint hosts: "gpu" is then that host's card on each.
   */
  taken: Map<string, (string[] | undefined)[]>;
}

/** One VM entry normalised; a rule with no usable `match` was reported by {@link check}. */
function normaliseVm(
  name: string,
  rawVm: RawVmConfig | undefined,
  declared: readonly string[] | null,
  ctx: Context,
): VmConfig {
  const at = ["vms", name];
  const vm: VmConfig = {
    name,
    location: location(ctx, at, true),
    rules: [],
    guard: rawVm?.guard ?? "enforce",
  };
  const hosts = rawVm === undefined ? undefined : hostReferences(rawVm, at, declared, ctx);
  if (hosts !== undefined) vm.hosts = hosts;
  const scope: VmScope = { vm, declared, taken: new Map() };
  const rules = (rawVm?.devices ?? []) as (RawRule | undefined)[];
  rules.forEach((rawRule, i) => {
    if (rawRule?.match === undefined) return;
    vm.rules.push(normaliseRule(rawRule, [...at, "devices", i], scope, ctx));
  });
  return vm;
}

/** One rule normalised, defaults filled in; its name is recorded in `scope.taken`. */
function normaliseRule(
  rawRule: RawRule,
  at: Steps,
  scope: VmScope,
  ctx: Context,
): DeviceRule {
  const match = normaliseMatch(rawRule.match, [...at, "match"], ctx);
  const hosts = hostReferences(rawRule, at, scope.declared, ctx);
  const rule: DeviceRule = {
    name: takeRuleName(rawRule, at, hosts, scope, ctx),
    vm: scope.vm.name,
    location: location(ctx, at),
    match,
    count: rawRule.all ? "all" : rawRule.count ?? 1,
    iommuGroup: rawRule.iommu_group ?? true,
    managed: rawRule.managed ?? true,
    multifunction: rawRule.multifunction ?? false,
    allowHostCritical: rawRule.allow_host_critical ?? false,
    allowNoFlr: rawRule.allow_no_flr ?? false,
    guard: rawRule.guard ?? scope.vm.guard ?? "enforce",
  };
  if (rawRule.rom !== undefined) {
    const rom: { bar?: "on" | "off"; file?: string } = {};
    if (rawRule.rom.bar !== undefined) rom.bar = rawRule.rom.bar;
    if (rawRule.rom.file !== undefined) rom.file = rawRule.rom.file;
    rule.rom = rom;
  }
  if (rawRule.boot_order !== undefined) rule.bootOrder = rawRule.boot_order;
  normaliseVf(rawRule, at, rule, ctx);
  if (hosts !== undefined) {
    checkRuleHosts(rawRule, at, hosts, scope.vm, ctx);
    rule.hosts = hosts;
  }
  return rule;
}

/**
 * `vf:` and `interface:` of a rule, checked together: an interface needs a VF, a VF rule takes
 * one VF of one PF (no `count`, `all` or `multifunction`), a given MAC must be unicast.
 */
function normaliseVf(rawRule: RawRule, at: Steps, rule: DeviceRule, ctx: Context): void {
  const raw = rawRule.interface;
  // An invalid `vf:` was reported already; its key is there with no value.
  if (!Object.hasOwn(rawRule, "vf")) {
    if (raw !== undefined) {
      report(
        ctx,
        [...at, "interface"],
        'An "interface:" passes an SR-IOV virtual function: the rule has no "vf:"',
        'add "vf: any" (or a VF index) and match the physical function',
        { key: true },
      );
    }
    return;
  }
  for (const key of ["count", "all", "multifunction"] as const) {
    if (rawRule[key] === undefined) continue;
    report(
      ctx,
      [...at, key],
      `A "vf:" rule takes one virtual function of one physical function: "${key}" does not apply`,
      `remove "${key}:", or write one rule per VF`,
      { key: true },
    );
  }
  if (rawRule.vf !== undefined) rule.vf = rawRule.vf;
  const settings: InterfaceSettings = { mac: raw?.mac ?? "auto" };
  if (settings.mac !== "auto") {
    const first = parseInt(settings.mac.slice(0, 2), 16);
    const why = (first & 1) === 1
      ? "a multicast address"
      : /^[0:]+$/.test(settings.mac)
      ? "all zeros"
      : null;
    if (why !== null) {
      report(
        ctx,
        [...at, "interface", "mac"],
        `Invalid MAC "${settings.mac}": ${why}, which no NIC can have`,
        'use a unicast MAC (an even first byte, e.g. "52:54:00:12:34:56"), or "auto"',
      );
    }
  }
  const vlan = raw?.vlan;
  if (typeof vlan === "number") settings.vlan = { tags: [vlan], trunk: false };
  else if (vlan !== undefined && vlan.tags !== undefined) {
    if (vlan.tags.length === 0) {
      report(
        ctx,
        [...at, "interface", "vlan", "tags"],
        "Empty VLAN tag list",
        // Only a VF takes an interface: here, and more than one tag is refused below as a trunk.
        "give one tag: vlan: 20",
      );
    }
    settings.vlan = { tags: vlan.tags, trunk: vlan.trunk ?? vlan.tags.length > 1 };
    // libvirt sets a VF's VLAN through its PF, one tag only: it defines a trunk, then refuses to
    // start the VM ("vlan trunking is not supported by SR-IOV network devices").
    if (settings.vlan.trunk) {
      report(
        ctx,
        [...at, "interface", "vlan", vlan.trunk === true ? "trunk" : "tags"],
        "An SR-IOV virtual function takes one VLAN tag, no trunk: libvirt would refuse to start " +
          'the VM ("vlan trunking is not supported by SR-IOV network devices")',
        "give one tag (vlan: 20); for a trunk, give the guest a bridge or macvtap interface instead",
      );
    }
  }
  rule.interface = settings;
}

/**
 * The rule's name, recorded in `scope.taken`: the `name:` given (reported when another rule of
 * the VM took it on a shared host), or one derived from the match and numbered (`#2`, `#3`) to
 * keep the records of two unnamed rules with the same criteria distinct.
 */
function takeRuleName(
  rawRule: RawRule,
  at: Steps,
  hosts: string[] | undefined,
  scope: VmScope,
  ctx: Context,
): string {
  const clashes = (name: string) =>
    (scope.taken.get(name) ?? []).some((other) =>
      hosts === undefined || other === undefined || other.some((h) => hosts.includes(h))
    );
  let name = rawRule.name ?? deriveRuleName(rawRule.match);
  if (rawRule.name !== undefined && clashes(name)) {
    report(
      ctx,
      [...at, "name"],
      `Duplicate rule name "${name}" in VM "${scope.vm.name}"`,
      hosts === undefined && scope.declared !== null
        ? 'give each rule of a VM its own name, or limit each to other hosts with "host:"'
        : "give each rule of a VM its own name",
    );
  } else if (clashes(name)) {
    let k = 2;
    while (clashes(`${name}#${k}`)) k++;
    name = `${name}#${k}`;
  }
  scope.taken.set(name, [...(scope.taken.get(name) ?? []), hosts]);
  return name;
}

/** Reports a rule host its VM is not planned on. */
function checkRuleHosts(
  rawRule: RawRule,
  at: Steps,
  hosts: readonly string[],
  vm: VmConfig,
  ctx: Context,
): void {
  const vmHosts = vm.hosts;
  if (vmHosts === undefined) return;
  const outside = hosts.filter((h) => !vmHosts.includes(h));
  if (outside.length === 0) return;
  report(
    ctx,
    [...at, rawRule.host !== undefined ? "host" : "hosts"],
    `Rule names host "${outside[0]}" but VM "${vm.name}" is not planned there`,
    `the VM is limited to ${vmHosts.map((h) => `"${h}"`).join(", ")}`,
  );
}

/**
 * Reads and parses a config file. Throws {@link ConfigErrors} for what the file says (located),
 * and for a file that is no regular file, too large or not UTF-8; {@link ConfigReadError} when it
 * is missing, a loop of symbolic links or not readable; other read errors as they are.
 *
 * @example
 * ```ts
 * import { assertEquals, assertOk } from "../../tests/helpers/assert.ts";
 * const error = await loadConfig("/nonexistent/passthrough_config.yaml").catch((e) => e);
 * assertEquals(error.message, 'Cannot read config "/nonexistent/passthrough_config.yaml": no such file');
 * assertOk(error instanceof ConfigReadError && error.problem === "missing");
 * ```
 */
export async function loadConfig(path: string): Promise<Config> {
  const refuse = (detail: string, hint: string, line = 1, column = 1) =>
    new ConfigErrors(path, [new ConfigError(detail, { file: path, line, column, path: "", hint })]);
  const tooLarge = (size: string) =>
    refuse(
      `File too large: ${size} bytes, the limit is ${MAX_CONFIG_BYTES}`,
      "is this the right file?",
    );
  // A FIFO blocks until a writer comes and /dev/zero never ends: read regular files only, and
  // of a huge one nothing (its size is known before reading; one that grows is cut short).
  let bytes: Uint8Array;
  try {
    const info = await Deno.stat(path);
    if (!info.isFile) throw refuse("Not a regular file", "give the path of a YAML file");
    if (info.size > MAX_CONFIG_BYTES) throw tooLarge(String(info.size));
    bytes = await readAtMost(path, MAX_CONFIG_BYTES + 1);
  } catch (error) {
    throw unreadableConfig(path, error);
  }
  if (bytes.length > MAX_CONFIG_BYTES) throw tooLarge(`more than ${MAX_CONFIG_BYTES}`);
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

/** The first `max` bytes of the file at `path` (all of a shorter one). */
async function readAtMost(path: string, max: number): Promise<Uint8Array> {
  using file = await Deno.open(path);
  const out = new Uint8Array(max);
  let length = 0;
  while (length < max) {
    const n = await file.read(out.subarray(length));
    if (n === null) break;
    length += n;
  }
  return out.subarray(0, length);
}

/** Why a config file cannot be read, as {@link ConfigReadError} tells it. */
export type ConfigReadProblem = "missing" | "loop" | "permission";

/** A config file that cannot be read: missing, a loop of symbolic links, or not readable. */
export class ConfigReadError extends Error {
  /** The error's name. */
  override name = "ConfigReadError";
  /** The config file's path. */
  readonly path: string;
  /** What stands in the way. */
  readonly problem: ConfigReadProblem;

  /** Builds the error for the config at `path` that cannot be read because of `problem`. */
  constructor(path: string, problem: ConfigReadProblem) {
    const why = problem === "missing"
      ? "no such file"
      : problem === "loop"
      ? "a loop of symbolic links"
      : "permission denied (check its owner and mode, or run as root)";
    // The sentence says all the system's error does: it is not kept as a cause, which the CLI
    // would print again.
    super(`Cannot read config "${path}": ${why}`);
    this.path = path;
    this.problem = problem;
  }
}

/** Why the config file at `path` cannot be read, as a {@link ConfigReadError} (the error as is else). */
function unreadableConfig(path: string, error: unknown): unknown {
  const problem: ConfigReadProblem | null = error instanceof Deno.errors.NotFound
    ? "missing"
    : error instanceof Deno.errors.FilesystemLoop
    ? "loop"
    : error instanceof Deno.errors.PermissionDenied
    ? "permission"
    : null;
  // Deno's own refusals (NotCapable) and the rest pass as they are.
  return problem === null ? error : new ConfigReadError(path, problem);
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
