/**
 * The FLR and serial number that `lspci -vvvnnkD` prints for each device: the oracle that
 * `lib/pci/config_space.ts`'s own reading of configuration space is checked against. Discovery
 * runs `-nnkD`, which prints neither.
 *
 * @module
 */

import type { ConfigSpaceFacts } from "../../lib/pci/config_space.ts";
import { canonicalPciAddress } from "../../lib/pci/address.ts";

/** Each device's facts by canonical address, from `lspci -vvv` text. */
export function lspciVerboseFacts(text: string): Map<string, ConfigSpaceFacts> {
  const facts = new Map<string, ConfigSpaceFacts>();
  for (const paragraph of text.split(/\n(?=\S)/)) {
    const [header = "", ...lines] = paragraph.split("\n");
    const address = canonicalPciAddress(header.split(" ")[0] ?? "");
    if (address === null) continue;
    facts.set(address, paragraphFacts(lines));
  }
  return facts;
}

/** FLR: `DevCap` FLReset+ or `AFCap` FLR+; none with capabilities listed is `false`. */
function paragraphFacts(lines: readonly string[]): ConfigSpaceFacts {
  let seen = false;
  let denied = false;
  let inDevCap = false;
  let flr = false;
  let serial: string | null = null;
  for (const line of lines) {
    if (!line.startsWith("\t")) continue;
    if (!line.startsWith("\t\t")) {
      inDevCap = false;
      const body = line.slice(1);
      if (body.startsWith("Capabilities:")) {
        if (body.includes("<access denied>")) denied = true;
        else {
          seen = true;
          const dsn = /Device Serial Number ([0-9a-f]{2}(?:-[0-9a-f]{2}){7})/i.exec(body);
          if (dsn) serial = (dsn[1] ?? "").toLowerCase();
        }
      }
      // No capability list at all: FLR is impossible, not unknown.
      if (body.startsWith("Status:") && /\bCap-/.test(body)) seen = true;
    } else if (!line.startsWith("\t\t\t")) {
      inDevCap = line.startsWith("DevCap:", 2);
      if (inDevCap && line.includes("FLReset+")) flr = true;
      if (line.startsWith("AFCap:", 2) && line.includes("FLR+")) flr = true;
    } else if (inDevCap && line.includes("FLReset+")) {
      flr = true;
    }
  }
  return { flr: flr ? true : denied ? null : seen ? false : null, serial };
}
