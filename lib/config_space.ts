/**
 * Reads Function Level Reset support and the Device Serial Number straight from a device's PCI
 * configuration space (the sysfs `config` file), so discovery does not need `lspci -vvv` (1.7 MB
 * of text for 1,024 functions) for two facts.
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

/** What {@link parseConfigSpace} finds in a configuration space. */
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

/**
 * FLR and serial number from the bytes of a sysfs `config` file (64, 256 or 4,096 bytes).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../tests/helpers/assert.ts";
 * const config = new Uint8Array(256);
 * config[0x06] = 0x10; // Status: capability list present
 * config[0x34] = 0x40; // first capability at 0x40
 * config.set([0x10, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x10], 0x40); // PCIe, DevCap FLR
 * assertEquals(parseConfigSpace(config), { flr: true, serial: null });
 * // An unprivileged read stops after the 64-byte header: FLR is unknown.
 * assertEquals(parseConfigSpace(config.slice(0, 64)), { flr: null, serial: null });
 * ```
 */
export function parseConfigSpace(config: Uint8Array): ConfigSpaceFacts {
  const length = config.length;
  const byte = (at: number) => (at < length ? config[at] ?? 0 : 0);
  const word = (at: number) => byte(at) | (byte(at + 1) << 8);
  const long = (at: number) => (word(at) | (word(at + 2) << 16)) >>> 0;
  if (length <= STATUS + 1) return { flr: null, serial: null };
  // No capability list at all: FLR is impossible, not unknown.
  if ((word(STATUS) & STATUS_CAP_LIST) === 0) return { flr: false, serial: null };
  const headerType = byte(HEADER_TYPE) & 0x7f;
  let where = byte(headerType === 2 ? CARDBUS_CAPABILITY_LIST : CAPABILITY_LIST) & ~3;
  let seen = false;
  let denied = false;
  let flr = false;
  let express = false;
  const visited = new Set<number>();
  while (where !== 0) {
    if (where + 4 > length) {
      denied = true;
      break;
    }
    seen = true;
    if (visited.has(where)) break;
    visited.add(where);
    const id = byte(where);
    if (id === 0xff) break;
    if (id === CAP_ID_EXP) {
      express = true;
      const type = (word(where + 2) >> 4) & 0xf;
      const endpoint = type === EXP_TYPE_ENDPOINT || type === EXP_TYPE_LEGACY_ENDPOINT;
      if (endpoint && where + EXP_DEVCAP + 4 <= length) {
        if ((long(where + EXP_DEVCAP) & EXP_DEVCAP_FLR) !== 0) flr = true;
      }
    } else if (id === CAP_ID_AF) {
      if ((byte(where + AF_CAP) & AF_CAP_FLR) !== 0) flr = true;
    }
    where = byte(where + 1) & ~3;
  }
  const serial = express ? deviceSerialNumber(config, long) : null;
  return { flr: flr ? true : denied ? null : seen ? false : null, serial };
}

function deviceSerialNumber(config: Uint8Array, long: (at: number) => number): string | null {
  const visited = new Set<number>();
  let where = EXT_CAP_START;
  // The kernel stops at pointers below 0x100 too: they cannot start an extended capability.
  while (where >= EXT_CAP_START && where + 4 <= config.length && !visited.has(where)) {
    visited.add(where);
    const header = long(where);
    if (header === 0 || header === 0xffffffff) return null;
    if ((header & 0xffff) === EXT_CAP_ID_DSN) {
      if (where + 12 > config.length) return null;
      const low = long(where + 4);
      const high = long(where + 8);
      const bytes = [
        high >>> 24,
        high >>> 16,
        high >>> 8,
        high,
        low >>> 24,
        low >>> 16,
        low >>> 8,
        low,
      ];
      return bytes.map((b) => (b & 0xff).toString(16).padStart(2, "0")).join("-");
    }
    where = (header >>> 20) & ~3;
  }
  return null;
}
