/**
 * The one description of `passthrough_config.yaml`. Three things derive from it: the TypeScript
 * type of a validated raw config ({@link RawConfig}, via {@link Infer}), the validation in
 * `lib/config/config.ts`, and the published `passthrough_config.schema.json` ({@link configJsonSchemaText}).
 * Change the config format here and nowhere else.
 *
 * Regenerate the JSON file with `deno run scripts/config_schema.ts > passthrough_config.schema.json`
 * (a test fails while the committed file differs).
 *
 * @module
 */

import { MAX_KEEP_BACKUPS } from "../state/backups.ts";

/** Value formats with a normalising parser in `lib/config/config.ts` and a pattern in the JSON schema. */
export type StringFormat =
  | "pci-id"
  | "vendor-device"
  | "class"
  | "pci-address"
  | "serial"
  | "slot"
  | "name"
  | "absolute-path"
  | "mac";

/** A string, optionally constrained by a format or a fixed set of values. */
export interface StringSchema {
  readonly type: "string";
  readonly description: string;
  readonly format?: StringFormat;
  readonly enum?: readonly string[];
  /** `1` for a value that must not be empty (an empty one would mean a default silently). */
  readonly minLength?: 1;
}

/** An integer with an optional lower bound, or one fixed value. */
export interface IntegerSchema {
  readonly type: "integer";
  readonly description: string;
  readonly minimum?: number;
  readonly maximum?: number;
  readonly const?: number;
}

/** `true` or `false`; with `const`, only that value. */
export interface BooleanSchema {
  readonly type: "boolean";
  readonly description: string;
  readonly const?: boolean;
}

/** A mapping with known keys; any other key is an error. */
export interface ObjectSchema {
  readonly type: "object";
  readonly description: string;
  readonly properties: Readonly<Record<string, Schema>>;
  readonly required?: readonly string[];
  /** At least this many keys (a `match` block must say something). */
  readonly minProperties?: number;
  /** Pairs of keys that must not appear together. */
  readonly exclusive?: readonly (readonly [string, string])[];
  /**
   * Keys an earlier version took, each with what to do instead: a config written for it is told
   * that, not that the key is unknown. Not part of the JSON Schema (there they are unknown).
   */
  readonly removed?: Readonly<Record<string, string>>;
  /**
   * Keys that belong elsewhere in the config, each with where this mapping is (`where`) and what
   * to write instead (`hint`, `{here}` standing for this mapping's own key): a config that nests
   * them here is told where they go, not only that they are unknown. Not part of the JSON Schema.
   */
  readonly misplaced?: Readonly<Record<string, { readonly where: string; readonly hint: string }>>;
}

/**
 * One of several schemas, chosen by the kind of value written (a string, an integer, a mapping):
 * `vf: any` or `vf: 2`. At most one option per kind.
 */
export interface OneOfSchema {
  readonly type: "oneOf";
  readonly description: string;
  readonly options: readonly Schema[];
}

/** A sequence of items. */
export interface ArraySchema {
  readonly type: "array";
  readonly description: string;
  readonly items: Schema;
}

/** A mapping from free-form names (VM names) to values. */
export interface MapSchema {
  readonly type: "map";
  readonly description: string;
  readonly values: Schema;
  readonly keyPattern: string;
  /** What to tell the user when a key does not fit `keyPattern`. */
  readonly keyHint?: string;
}

/** Any schema node. */
export type Schema =
  | StringSchema
  | IntegerSchema
  | BooleanSchema
  | ObjectSchema
  | ArraySchema
  | MapSchema
  | OneOfSchema;

type Simplify<T> = { [K in keyof T]: T[K] } & unknown;

type InferObject<P, R extends string> = Simplify<
  & { -readonly [K in keyof P & R]: Infer<P[K]> }
  & { -readonly [K in Exclude<keyof P, R>]?: Infer<P[K]> }
>;

/** The TypeScript type of a value that validated against schema `S`. */
export type Infer<S> = S extends { type: "string"; enum: readonly (infer E)[] } ? E
  : S extends { type: "string" } ? string
  : S extends { type: "integer"; const: infer C } ? C
  : S extends { type: "integer" } ? number
  : S extends { type: "boolean" } ? boolean
  : S extends { type: "array"; items: infer I } ? Infer<I>[]
  : S extends { type: "map"; values: infer V } ? ReadonlyMap<string, Infer<V> | undefined>
  : S extends { type: "oneOf"; options: readonly (infer O)[] } ? Infer<O>
  : S extends { type: "object"; properties: infer P; required: readonly (infer R extends string)[] }
    ? InferObject<P, R>
  : S extends { type: "object"; properties: infer P } ? InferObject<P, never>
  : never;

/**
 * Readable class names accepted by `match.class`, each the class-code prefixes it stands for
 * (a device matches when its 6-digit class code starts with one of them).
 */
export const CLASS_NAMES: Readonly<Record<string, readonly string[]>> = {
  "storage": ["01"],
  "scsi": ["0100"],
  "ide": ["0101"],
  "raid": ["0104"],
  "sata": ["0106"],
  "sas": ["0107"],
  "nvme": ["0108"],
  "network": ["02"],
  "ethernet": ["0200"],
  "wifi": ["0280"],
  "display": ["03"],
  "vga": ["0300"],
  "3d": ["0302"],
  "multimedia": ["04"],
  "audio": ["0401", "0403"],
  "hda": ["0403"],
  "serial-bus": ["0c"],
  "firewire": ["0c00"],
  "usb": ["0c03"],
  "smbus": ["0c05"],
  // The USB4 Host Interface (prog-if 40 of USB), what Thunderbolt 4 and USB4 NHIs report; PCI
  // defines no class 0c0a. Thunderbolt 3 NHIs are "other system peripherals" (0880): IDs name them.
  "thunderbolt": ["0c0340"],
  "crypto": ["10"],
  "signal-processing": ["11"],
  "accelerator": ["12"],
};

/**
 * The class code prefixes a `class` value stands for: a name of {@link CLASS_NAMES} (`nvme`,
 * `3d`, any case) or 2, 4 or 6 hex digits (`0300`), always hex when written with `0x` (`0x3d`);
 * `null` when it is neither. The one reading of a class, for a rule and `devices --class` alike.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(classPrefixesOf("3D"), ["0302"]);
 * assertEquals(classPrefixesOf("0x3d"), ["3d"]);
 * assertEquals(classPrefixesOf("0300"), ["0300"]);
 * assertEquals(classPrefixesOf("constructor"), null);
 * ```
 */
export function classPrefixesOf(text: string): readonly string[] | null {
  const value = text.trim().toLowerCase();
  if (Object.hasOwn(CLASS_NAMES, value)) return CLASS_NAMES[value]!;
  return new RegExp(FORMAT_PATTERNS.class).test(value) ? [value.replace(/^0x/, "")] : null;
}

// Up to 4 digits, as the loader reads them: leading zeros may be left out ("de" is "00de").
const pciId = (what: string, example: string): StringSchema => ({
  type: "string",
  format: "pci-id",
  description:
    `${what}: up to 4 hex digits (leading zeros optional), with or without 0x, any case (e.g. "${example}")`,
});

/** The `match` block of a rule (its formatted keys are the ones YAML may read as numbers). */
export const MATCH_SCHEMA = {
  type: "object",
  description:
    "Which host devices the rule selects: every criterion given must hold (they are ANDed)",
  minProperties: 1,
  properties: {
    vendor_id: pciId("PCI vendor ID", "10de"),
    device_id: pciId("PCI device ID", "2684"),
    vendor_device_id: {
      type: "string",
      format: "vendor-device",
      description: 'Vendor and device ID together, as lspci -nn prints them ("10de:2684")',
    },
    driver: {
      type: "string",
      // No device's driver is "": such a rule matched nothing, on every host.
      minLength: 1,
      description:
        "Host kernel driver the device was resolved with (nvidia, xhci_hcd); still matches after libvirt rebinds it to vfio-pci",
    },
    subsystem_vendor_id: pciId("Subsystem vendor ID (the board maker)", "1043"),
    subsystem_device_id: pciId("Subsystem device ID", "88e2"),
    class: {
      type: "string",
      format: "class",
      description:
        'PCI class as 2, 4 or 6 hex digits matched as a prefix ("03", "0c03", "010802"), or a name: ' +
        Object.keys(CLASS_NAMES).join(", "),
    },
    slot: {
      type: "string",
      format: "slot",
      description: 'Physical slot name as the firmware reports it ("3", "CPU1 SLOT2")',
    },
    serial: {
      type: "string",
      format: "serial",
      description: 'PCIe Device Serial Number as lspci -vvv prints it ("00-11-22-ff-ff-33-44-55")',
    },
    numa_node: { type: "integer", minimum: 0, description: "NUMA node the device is attached to" },
    address: {
      type: "string",
      format: "pci-address",
      description:
        'Host PCI address ("0000:0b:00.0" or "0b:00.0"): a last resort, addresses change when cards move',
    },
  },
} as const satisfies ObjectSchema;

/** Where a VM or rule applies: one host, or a list of hosts, named in the top-level `hosts:`. */
const HOST_NAME_SCHEMA = {
  type: "string",
  description: "Name of a host declared under the top-level hosts: (limits this entry to it)",
} as const satisfies StringSchema;

const HOST_LIST_SCHEMA = {
  type: "array",
  description:
    "Names of hosts declared under the top-level hosts: (limits this entry to them); absent: every host",
  items: {
    type: "string",
    description: "Name of a host declared under the top-level hosts:",
  },
} as const satisfies ArraySchema;

/** The start guard's policies (`guard:` of a VM or a rule); the default is the first. */
export const GUARD_POLICIES = ["enforce", "warn", "off"] as const;

/** `guard:`: what the start guard (`passthrough hook install`) does when it finds a problem. */
const GUARD_SCHEMA = {
  type: "string",
  enum: GUARD_POLICIES,
  description:
    "What the start guard does when a hostdev's address no longer holds the recorded device: enforce (refuse the start, default), warn (start and log the refusal), off (no check); a rule's value overrides its VM's. A device the host needs is refused under warn too, and under a rule's off: only the VM's own off, or allow_host_critical: true on the rule, lets it go; recorded for the hook by passthrough apply",
} as const satisfies StringSchema;

const VLAN_TAG = {
  type: "integer",
  minimum: 0,
  maximum: 4095,
  description: "A VLAN ID (0 to 4095)",
} as const satisfies IntegerSchema;

/** `interface:` of a `vf:` rule: the VF is passed as `<interface type='hostdev'>`. */
const INTERFACE_SCHEMA = {
  type: "object",
  description:
    "Pass the VF as a guest NIC (<interface type='hostdev'>): libvirt sets its MAC and VLAN through the PF before the guest starts (default for a vf: rule: mac auto, no VLAN)",
  properties: {
    mac: {
      type: "string",
      format: "mac",
      description:
        'The guest MAC: "auto" (default: derived from the PF\'s serial, else its interface\'s MAC, the VM and the rule: the same on every plan) or a unicast MAC ("52:54:00:12:34:56")',
    },
    vlan: {
      type: "oneOf",
      description:
        "The VLAN the PF tags the VF's traffic with: one tag (libvirt sets no trunk on a VF)",
      options: [
        VLAN_TAG,
        {
          type: "object",
          description: "One VLAN tag, as a list (several, or a trunk, are refused)",
          required: ["tags"],
          properties: {
            tags: { type: "array", description: "The VLAN IDs", items: VLAN_TAG },
            trunk: {
              type: "boolean",
              description: "Must be false: libvirt refuses to start a VF's interface as a trunk",
            },
          },
        },
      ],
    },
  },
} as const satisfies ObjectSchema;

const RULE_SCHEMA = {
  type: "object",
  description: "One rule: which devices to pass through and how",
  required: ["match"],
  exclusive: [["count", "all"], ["host", "hosts"]],
  properties: {
    host: HOST_NAME_SCHEMA,
    hosts: HOST_LIST_SCHEMA,
    name: {
      type: "string",
      format: "name",
      description:
        "Name of the rule (unique within the VM), on one line; derived from the match when omitted",
    },
    match: MATCH_SCHEMA,
    count: {
      type: "integer",
      minimum: 1,
      description:
        "How many cards the rule takes (default 1): functions of one card in one IOMMU group count once (a card split over groups, once per group), two cards sharing a group twice; more is ambiguous, fewer no-match",
    },
    all: {
      type: "boolean",
      const: true,
      description: "Take every matching device, however many (instead of count)",
    },
    iommu_group: {
      type: "boolean",
      description:
        "Also pass every other endpoint of the matched device's IOMMU group (default true); bridges never. With false the VM starts only while those are unbound or on vfio-pci",
    },
    managed: {
      type: "boolean",
      description:
        "libvirt detaches the device from its host driver when the VM starts (managed='yes', default true)",
    },
    rom: {
      type: "object",
      description: "The device's option ROM",
      properties: {
        bar: {
          type: "string",
          enum: ["on", "off"],
          description: "Expose the ROM BAR to the guest",
        },
        file: {
          type: "string",
          format: "absolute-path",
          description: "Absolute path of a ROM image to present instead",
        },
      },
    },
    boot_order: {
      type: "integer",
      minimum: 1,
      description:
        "Boot from this device, in this position of the VM's per-device boot order: refused while the VM's <os> has <boot dev=...> lines, which libvirt does not combine with it, or another device has this position",
    },
    multifunction: {
      type: "boolean",
      description:
        "Keep a card's functions together in one guest slot, function numbers preserved (default false)",
    },
    allow_host_critical: {
      type: "boolean",
      description:
        "Pass the group even though it holds devices the host likely needs (turns the refusal into a warning)",
    },
    allow_no_flr: {
      type: "boolean",
      description:
        "Silence the reset warnings: `no-flr` (no Function Level Reset) and `reset` (no usable reset_method: bus reset only, or an AMD GPU without vendor-reset)",
    },
    guard: GUARD_SCHEMA,
    vf: {
      type: "oneOf",
      description:
        "Take an SR-IOV virtual function of the matched physical function instead of the PF itself: its index (0, 1, ...) or any free one",
      options: [
        { type: "string", enum: ["any"], description: "The lowest free VF (kept across plans)" },
        { type: "integer", minimum: 0, description: "The VF index (the PF's virtfnN link)" },
      ],
    },
    interface: INTERFACE_SCHEMA,
  },
} as const satisfies ObjectSchema;

/** One host section of a shared config. */
const HOST_SCHEMA = {
  type: "object",
  description:
    "One host: a process plans only its own section (--host NAME, default this machine's host name)",
  properties: {
    connect: {
      type: "string",
      minLength: 1,
      description:
        'libvirt URI of the host (default: --connect, else libvirt\'s default); a remote one ("qemu+ssh://root@hv1/system") needs "sysfs:"',
    },
    sysfs: {
      type: "string",
      minLength: 1,
      description:
        "A tree captured on that host with passthrough snapshot, read instead of /sys (a path relative to the config file's folder)",
    },
    keep_backups: {
      type: "integer",
      minimum: 0,
      maximum: MAX_KEEP_BACKUPS,
      description:
        "How many backups of each VM apply keeps there once its change held, removing older ones (default 10; 0: keep all; or --keep-backups N)",
    },
  },
  misplaced: {
    // A fleet config's first shape: each host's VMs nested under its section.
    vms: {
      where: "a host's section",
      hint:
        'list the VMs under the top-level "vms:", and limit each to its hosts with "host: {here}" (or "hosts: [{here}, ...]")',
    },
  },
  removed: {
    // Gone with the host worker pool: libvirt's node-device API cannot say what a host uses
    // (its disks, its default-route NIC), so nothing is planned from it.
    discovery:
      'every host is read from its sysfs now: delete the line ("discovery: sysfs" was the default); for "discovery: libvirt", capture the host\'s tree there with "passthrough snapshot DIR" and give it as "sysfs: DIR"',
  },
} as const satisfies ObjectSchema;

/** The schema of the whole config file. */
export const CONFIG_SCHEMA = {
  type: "object",
  description: "passthrough: which host PCI devices go to which libvirt VMs",
  required: ["version", "vms"],
  properties: {
    version: { type: "integer", const: 1, description: "Config format version (1)" },
    example: {
      type: "boolean",
      description:
        "true marks the shipped example: plan shows it, apply refuses it until this line is removed",
    },
    hosts: {
      type: "map",
      keyPattern: "^[A-Za-z0-9][A-Za-z0-9_.-]*$",
      keyHint: "use letters, digits, dots, dashes and underscores, starting with a letter or digit",
      description:
        "Hosts sharing this file, by name: each process plans only its own section; absent: the file is for whichever host runs it",
      values: HOST_SCHEMA,
    },
    vms: {
      type: "map",
      // What libvirt takes as a domain name (spaces included), less "/", control characters and
      // spaces at either end, which are mistakes here.
      keyPattern: "^[^/\\s\\x00-\\x1f\\x7f]([^/\\x00-\\x1f\\x7f]*[^/\\s\\x00-\\x1f\\x7f])?$",
      keyHint:
        'a libvirt domain name has no "/" and no control character (newline, tab), and here no space at either end',
      description: "libvirt domain names, each with the devices it gets",
      values: {
        type: "object",
        description: "One VM",
        required: ["devices"],
        exclusive: [["host", "hosts"]],
        properties: {
          host: HOST_NAME_SCHEMA,
          hosts: HOST_LIST_SCHEMA,
          guard: GUARD_SCHEMA,
          devices: {
            type: "array",
            description: "Rules, each resolving to one or more host devices",
            items: RULE_SCHEMA,
          },
        },
      },
    },
  },
} as const satisfies ObjectSchema;

/** A config file as validated, before normalisation (IDs as written). */
export type RawConfig = Infer<typeof CONFIG_SCHEMA>;
/** One VM entry as validated. */
export type RawVmConfig = Infer<typeof CONFIG_SCHEMA.properties.vms.values>;
/** One rule as validated. */
export type RawRule = Infer<typeof RULE_SCHEMA>;
/** One host entry as validated. */
export type RawHostConfig = Infer<typeof HOST_SCHEMA>;
/** One match block as validated. */
export type RawMatch = Infer<typeof MATCH_SCHEMA>;

/** The regular expression each string format must satisfy (also published in the JSON schema). */
export const FORMAT_PATTERNS: Readonly<Record<StringFormat, string>> = {
  "pci-id": "^(0[xX])?[0-9a-fA-F]{1,4}$",
  "vendor-device": "^(0[xX])?[0-9a-fA-F]{1,4}:(0[xX])?[0-9a-fA-F]{1,4}$",
  "class": "^(0[xX])?([0-9a-fA-F]{2}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6})$",
  "pci-address": "^([0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[01][0-9a-fA-F]\\.[0-7]$",
  "serial": "^[0-9a-fA-F]{2}([-:]?[0-9a-fA-F]{2}){7}$",
  "slot": "^\\S(.*\\S)?$",
  // A rule's name is printed in one line of plan's output: no line end or tab (other control
  // characters are refused as no string of the config may hold them).
  "name": "^\\S([^\\t\\n\\r]*\\S)?$",
  // What libvirt's schema takes for <rom file> (absFilePath, its Unix form).
  "absolute-path": "^/.+$",
  "mac": "^(auto|[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5})$",
};

/**
 * The characters no string of the config may hold, as a regular expression's character class:
 * C0 controls but tab, newline and carriage return, U+FFFE and U+FFFF, which XML 1.0 cannot hold
 * (not even as a character reference) and libvirt's definitions are XML. Published in the JSON
 * schema so that an editor marks what loading the config refuses; unpaired surrogates, which it
 * refuses too, no JSON Schema pattern can name.
 */
export const NOT_IN_XML_CHARS = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\ufffe\\uffff]";

type JsonSchema = Record<string, unknown>;

/** A pattern matching any of `words` in any case: JSON Schema's patterns take no `i` flag. */
function anyCase(words: readonly string[]): string {
  const caseless = (word: string) =>
    [...word].map((c) =>
      // Names hold letters, digits and "-", which needs no escape outside a class.
      c.toLowerCase() === c.toUpperCase() ? c : `[${c.toLowerCase()}${c.toUpperCase()}]`
    ).join("");
  return `^(${words.map(caseless).join("|")})$`;
}

/**
 * What an editor sees of a match criterion YAML reads as a number (`vendor_id: 0x10de` is 4318 to
 * it, `class: 0300` is 300), which the config reader takes as written: a non-negative integer no
 * larger than the format's hex digits hold (YAML cannot say whether the digits were hex or
 * decimal, so `class: 3` passes here and the reader refuses it, located).
 */
const WRITTEN_AS_NUMBER = {
  "pci-id": { type: "integer", minimum: 0, maximum: 0xffff },
  class: { type: "integer", minimum: 0, maximum: 0xffffff },
  serial: { type: "integer", minimum: 0 },
} as const;

function toJsonSchema(schema: Schema): JsonSchema {
  switch (schema.type) {
    case "string": {
      if (schema.enum) {
        return { type: "string", enum: [...schema.enum], description: schema.description };
      }
      if (schema.format === "class") {
        return {
          description: schema.description,
          anyOf: [
            { type: "string", pattern: FORMAT_PATTERNS.class },
            { type: "string", enum: Object.keys(CLASS_NAMES) },
            // The reader takes a name in any case (`VGA`, as lspci prints it); the enum above
            // is what an editor offers to complete.
            { type: "string", pattern: anyCase(Object.keys(CLASS_NAMES)) },
            WRITTEN_AS_NUMBER.class,
          ],
        };
      }
      if (schema.format === "pci-id" || schema.format === "serial") {
        // Read as written, as a class is (parseConfig's prepare): `device_id: 1521`, as lspci -nn
        // prints it, is the ID 1521, though YAML reads a number.
        const text = { type: "string", pattern: FORMAT_PATTERNS[schema.format] };
        return {
          description: schema.description,
          anyOf: [text, WRITTEN_AS_NUMBER[schema.format]],
        };
      }
      if (schema.format === "slot") {
        // YAML reads `slot: 3` as a number; both spellings name the same slot.
        return {
          description: schema.description,
          anyOf: [
            { type: "string", pattern: FORMAT_PATTERNS.slot, not: { pattern: NOT_IN_XML_CHARS } },
            { type: "integer" },
          ],
        };
      }
      const out: JsonSchema = { type: "string", description: schema.description };
      if (schema.format) out.pattern = FORMAT_PATTERNS[schema.format];
      // A format of hex digits holds no control character already.
      if (
        schema.format === undefined || schema.format === "absolute-path" ||
        schema.format === "name"
      ) {
        out.not = { pattern: NOT_IN_XML_CHARS };
      }
      if (schema.minLength !== undefined) out.minLength = schema.minLength;
      return out;
    }
    case "integer": {
      const out: JsonSchema = { type: "integer", description: schema.description };
      if (schema.const !== undefined) out.const = schema.const;
      if (schema.minimum !== undefined) out.minimum = schema.minimum;
      if (schema.maximum !== undefined) out.maximum = schema.maximum;
      return out;
    }
    case "boolean": {
      const out: JsonSchema = { type: "boolean", description: schema.description };
      if (schema.const !== undefined) out.const = schema.const;
      return out;
    }
    case "array":
      return { type: "array", description: schema.description, items: toJsonSchema(schema.items) };
    case "oneOf":
      return { description: schema.description, anyOf: schema.options.map(toJsonSchema) };
    case "map":
      return {
        type: "object",
        description: schema.description,
        propertyNames: { pattern: schema.keyPattern },
        additionalProperties: toJsonSchema(schema.values),
      };
    case "object": {
      const out: JsonSchema = { type: "object", description: schema.description };
      out.properties = Object.fromEntries(
        Object.entries(schema.properties).map(([k, v]) => [k, toJsonSchema(v)]),
      );
      if (schema.required?.length) out.required = [...schema.required];
      if (schema.minProperties !== undefined) out.minProperties = schema.minProperties;
      out.additionalProperties = false;
      if (schema.exclusive?.length) {
        out.not = {
          anyOf: schema.exclusive.map(([a, b]) => ({ required: [a, b] })),
        };
      }
      return out;
    }
  }
}

/**
 * The exact text of `passthrough_config.schema.json`: the JSON Schema (draft 2020-12) generated
 * from {@link CONFIG_SCHEMA}; editors use it through the `yaml-language-server` comment.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const schema = JSON.parse(configJsonSchemaText()) as { required: string[] };
 * assertEquals(schema.required, ["version", "vms"]);
 * ```
 */
export function configJsonSchemaText(): string {
  const schema = {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: "urn:passthrough:config:1",
    title: "passthrough_config.yaml",
    ...toJsonSchema(CONFIG_SCHEMA),
  };
  return JSON.stringify(schema, null, 2) + "\n";
}
