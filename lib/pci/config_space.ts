/**
 * Reads Function Level Reset support and the Device Serial Number straight from a device's PCI
 * configuration space (the sysfs `config` file), so discovery does not need `lspci -vvv`, which
 * prints every capability of every function, for two facts.
 *
 * The walk follows what pciutils 3.9 `lspci -vvv` prints, so the answers are the ones discovery
 * gave when it parsed that output:
 * - FLR is `true` when a PCI Express capability of an endpoint or legacy endpoint has DevCap
 *   bit 28 (lspci's `FLReset+`), or a PCI Advanced Features capability has AFCap bit 1
 *   (`AFCap: FLR+`);
 * - `false` when the capability list was read without finding either, or the Status register
 *   says there is no capability list (lspci's `Cap-`);
 * - `null` when the list cannot be read: the file holds only the 64-byte header, as for an
 *   unprivileged read of a real device (lspci's `<access denied>`).
 * - The serial comes from the extended capability 0x0003 (offset 0x100 and up), which lspci
 *   only looks for on PCI Express devices.
 *
 * @module
 */

/** FLR and serial number as a configuration space gives them (see {@link readConfigSpace}). */
export interface ConfigSpaceFacts {
  /** Function Level Reset: `true`, `false`, or `null` when the capabilities were not readable. */
  flr: boolean | null;
  /** Device Serial Number as lspci prints it (`00-11-22-ff-ff-33-44-55`), or `null`. */
  serial: string | null;
}

const STATUS = 0x06;
const STATUS_CAP_LIST = 0x10;
const HEADER_TYPE = 0x0e;
const CAPABILITY_LIST = 0x34;
const CARDBUS_CAPABILITY_LIST = 0x14;
const CAP_ID_EXP = 0x10;
const CAP_ID_AF = 0x13;
const EXP_DEVCAP = 4;
const EXP_DEVCAP_FLR = 1 << 28;
const EXP_TYPE_ENDPOINT = 0;
const EXP_TYPE_LEGACY_ENDPOINT = 1;
const AF_CAP = 3;
const AF_CAP_FLR = 0x02;
const EXT_CAP_START = 0x100;
const EXT_CAP_ID_DSN = 0x0003;
/** Standard capabilities that fit between 0x40 and 0x100, 4 bytes apart (the kernel uses 48). */
const STANDARD_CAP_TTL = 48;
/** Extended capabilities that fit in 0x100–0x1000, 8 bytes each (the kernel's bound). */
const EXTENDED_CAP_TTL = (0x1000 - 0x100) / 8;

/**
 * Reads `length` bytes at `offset` of a configuration space. Fewer bytes (or none) come back past
 * the end, and past the 64-byte header when the kernel denies an unprivileged read.
 */
export type ConfigSpaceReader = (offset: number, length: number) => Uint8Array;

/** What {@link readConfigSpace} finds: the header fields discovery needs, FLR and serial. */
export interface ConfigSpaceHeaderFacts extends ConfigSpaceFacts {
  /** The revision byte (offset 0x08), or `null` when the header is too short. */
  revision: number | null;
  /** The header type without the multi-function bit (1: PCI-to-PCI bridge), or `null`. */
  headerType: number | null;
}

/**
 * A {@link ConfigSpaceReader} over bytes already read (a whole `config` file).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const read = bufferConfigReader(new Uint8Array([1, 2, 3]));
 * assertEquals([...read(1, 4)], [2, 3]);
 * assertEquals(read(8, 4).length, 0);
 * ```
 */
export function bufferConfigReader(config: Uint8Array): ConfigSpaceReader {
  return (offset, length) => config.subarray(Math.min(offset, config.length), offset + length);
}

/**
 * The revision, header type, FLR and serial number, asking `read` only for the registers the
 * walk visits: a few dozen bytes instead of the whole space. On a real device each 4 bytes of a
 * sysfs `config` read is one configuration cycle (a trap into the hypervisor in a VM), so reading
 * all 4,096 bytes costs about a thousand of them per function.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const config = new Uint8Array(256);
 * config[0x06] = 0x10; // Status: capability list present
 * config[0x08] = 0xa1; // revision
 * config[0x0e] = 0x80; // multi-function endpoint (header type 0)
 * config[0x34] = 0x40;
 * config.set([0x13, 0x00, 0x06, 0x02], 0x40); // Advanced Features: FLR
 * const asked: number[] = [];
 * const facts = readConfigSpace((offset, length) => {
 *   asked.push(length);
 *   return config.subarray(offset, offset + length);
 * });
 * assertEquals(facts, { revision: 0xa1, headerType: 0, flr: true, serial: null });
 * assertEquals(asked.reduce((a, b) => a + b), 21);
 * ```
 */
export function readConfigSpace(read: ConfigSpaceReader): ConfigSpaceHeaderFacts {
  const head = read(0, 16);
  const revision = head.length > 0x08 ? head[0x08] ?? 0 : null;
  const headerType = head.length > HEADER_TYPE ? (head[HEADER_TYPE] ?? 0) & 0x7f : null;
  if (head.length <= STATUS + 1) return { revision, headerType, flr: null, serial: null };
  // No capability list at all: FLR is impossible, not unknown.
  if ((((head[STATUS] ?? 0) | ((head[STATUS + 1] ?? 0) << 8)) & STATUS_CAP_LIST) === 0) {
    return { revision, headerType, flr: false, serial: null };
  }
  const pointer = read(headerType === 2 ? CARDBUS_CAPABILITY_LIST : CAPABILITY_LIST, 1);
  let where = (pointer[0] ?? 0) & ~3;
  let seen = false;
  let denied = pointer.length === 0;
  let flr = false;
  let express = false;
  // A looping list ends after as many steps as distinct capabilities fit, as the kernel's
  // walk does (PCI_FIND_CAP_TTL); a step count needs no per-device set.
  for (let ttl = STANDARD_CAP_TTL; where !== 0 && ttl > 0; ttl--) {
    // ID, next pointer, and the capability's own 16 bits (PCIe flags; AF's capability byte).
    const cap = read(where, 4);
    if (cap.length < 4) {
      denied = true;
      break;
    }
    seen = true;
    const id = cap[0] ?? 0;
    if (id === 0xff) break;
    if (id === CAP_ID_EXP) {
      express = true;
      const type = ((cap[2] ?? 0) >> 4) & 0xf;
      if (type === EXP_TYPE_ENDPOINT || type === EXP_TYPE_LEGACY_ENDPOINT) {
        const devcap = read(where + EXP_DEVCAP, 4);
        if (devcap.length === 4 && (long(devcap, 0) & EXP_DEVCAP_FLR) !== 0) flr = true;
      }
    } else if (id === CAP_ID_AF) {
      if (((cap[AF_CAP] ?? 0) & AF_CAP_FLR) !== 0) flr = true;
    }
    where = (cap[1] ?? 0) & ~3;
  }
  const serial = express ? deviceSerialNumber(read) : null;
  return { revision, headerType, flr: flr ? true : denied ? null : seen ? false : null, serial };
}

/** The little-endian 32-bit value at `at` of `bytes` (which must hold 4 bytes there). */
function long(bytes: Uint8Array, at: number): number {
  return ((bytes[at] ?? 0) | ((bytes[at + 1] ?? 0) << 8) | ((bytes[at + 2] ?? 0) << 16) |
    ((bytes[at + 3] ?? 0) << 24)) >>> 0;
}

function deviceSerialNumber(read: ConfigSpaceReader): string | null {
  let where = EXT_CAP_START;
  // The kernel stops at pointers below 0x100 too: they cannot start an extended capability.
  for (let ttl = EXTENDED_CAP_TTL; where >= EXT_CAP_START && ttl > 0; ttl--) {
    const bytes = read(where, 4);
    if (bytes.length < 4) return null;
    const header = long(bytes, 0);
    if (header === 0 || header === 0xffffffff) return null;
    if ((header & 0xffff) === EXT_CAP_ID_DSN) {
      const body = read(where + 4, 8);
      if (body.length < 8) return null;
      const low = long(body, 0);
      const high = long(body, 4);
      const parts = [
        high >>> 24,
        high >>> 16,
        high >>> 8,
        high,
        low >>> 24,
        low >>> 16,
        low >>> 8,
        low,
      ];
      return parts.map((b) => (b & 0xff).toString(16).padStart(2, "0")).join("-");
    }
    where = (header >>> 20) & ~3;
  }
  return null;
}
