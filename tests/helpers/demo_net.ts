/**
 * Network interfaces added to a built tree of the demo's TRX40 host: its Aquantia NIC
 * (0000:44:00.0) as `enp68s0`, and bridge `br0` whose port it is, as sysfs links them.
 */

/** The Aquantia NIC's address on the demo host. */
export const AQUANTIA = "0000:44:00.0";

/** Links `enp68s0` (the Aquantia NIC) and `br0` over it into the tree at `sys`. */
export function linkBridgeOverAquantia(sys: string): void {
  Deno.mkdirSync(`${sys}/class/net`, { recursive: true });
  Deno.mkdirSync(`${sys}/devices/virtual/net/br0`, { recursive: true });
  Deno.symlinkSync("../enp68s0", `${sys}/devices/virtual/net/br0/lower_enp68s0`);
  Deno.symlinkSync("../../devices/virtual/net/br0", `${sys}/class/net/br0`);
  Deno.symlinkSync(
    `../../devices/pci0000:40/0000:40:01.3/${AQUANTIA}/net/enp68s0`,
    `${sys}/class/net/enp68s0`,
  );
}
