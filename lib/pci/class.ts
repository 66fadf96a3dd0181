/**
 * Which PCI functions are bridges, in the sense VFIO uses: functions with a type-1 (PCI-to-PCI)
 * or type-2 (CardBus) configuration header. vfio-pci binds only type-0 functions, and VFIO leaves
 * bridges out of an IOMMU group's viability check, so a bridge is never passed to a guest and
 * never needs to be. Host bridges (class 0600) and ISA bridges (0601) have type-0 headers: they
 * are ordinary functions here.
 *
 * @module
 */

/** Class and subclass (`0604`) of the bridges with type-1 or type-2 headers. */
const BRIDGE_CLASSES = new Set([
  "0604", // PCI-to-PCI bridge (type 1)
  "0607", // CardBus bridge (type 2)
  "0609", // semi-transparent PCI-to-PCI bridge (type 1)
]);

/**
 * Whether a class code (`060400`, `0x060900`) names a bridge, for sources that only give the
 * class (host descriptions, some node-device listings).
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * assertEquals(["060400", "0x060900", "060700", "060000", "030000"].map(isBridgeClass),
 *   [true, true, true, false, false]);
 * ```
 */
export function isBridgeClass(classCode: string): boolean {
  const digits = classCode.startsWith("0x") || classCode.startsWith("0X")
    ? classCode.slice(2)
    : classCode;
  return BRIDGE_CLASSES.has(digits.slice(0, 4));
}

/**
 * The configuration header type a function of this class has (bit 7, multi-function, aside):
 * 1 for PCI-to-PCI bridges, 2 for CardBus bridges, 0 otherwise. Used to build trees whose
 * `config` reads back like a real device's.
 */
export function headerTypeOfClass(classCode: number): 0 | 1 | 2 {
  const baseSub = classCode >> 8;
  return baseSub === 0x0607 ? 2 : baseSub === 0x0604 || baseSub === 0x0609 ? 1 : 0;
}

/** Whether a header type (bit 7 masked off) is a bridge's: 1 (PCI-to-PCI) or 2 (CardBus). */
export function isBridgeHeader(headerType: number): boolean {
  return headerType === 1 || headerType === 2;
}
