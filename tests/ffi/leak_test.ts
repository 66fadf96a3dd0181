/**
 * Memory ownership: every `char*` libvirt hands back is freed with libc `free()`, every handle
 * with its `vir*Free`. 10,000 round trips must grow the process's RSS by less than 10 MiB; without
 * the `free()` the XML alone (about 6 KiB a fetch here) would leak about 60 MiB.
 */

import { assert } from "../helpers/assert.ts";
import { COMPUTER_DEVICE, nodeDeviceNamed, writeTempWorld } from "../helpers/world.ts";
import { Connection } from "../../ffi/mod.ts";

const MIB = 1024 * 1024;
const ROUNDS = 10_000;

// A long description makes each XML fetch big enough that a missing free() shows up clearly.
const DESCRIPTION = "passthrough leak probe ".repeat(256);
const WORLD = `<node>
  <domain type='test'>
    <name>leaky</name>
    <description>${DESCRIPTION}</description>
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
  </domain>
  ${COMPUTER_DEVICE}
</node>`;

function growth(rounds: number, body: () => void): number {
  for (let i = 0; i < 500; i++) body();
  const before = Deno.memoryUsage().rss;
  for (let i = 0; i < rounds; i++) body();
  return Deno.memoryUsage().rss - before;
}

Deno.test("Domain.xml() 10,000 times grows RSS by less than 10 MiB", async () => {
  await using world = await writeTempWorld(WORLD);
  using conn = Connection.open(world.uri);
  using dom = conn.lookupDomainByName("leaky");
  let bytes = 0;
  const grown = growth(ROUNDS, () => {
    bytes += dom.xml({ inactive: true, secure: true }).length;
  });
  console.log(
    `xml(): ${ROUNDS} fetches of ${(bytes / (ROUNDS + 500) / 1024).toFixed(1)} KiB, ` +
      `RSS grew ${(grown / MIB).toFixed(2)} MiB`,
  );
  assert.ok(grown < 10 * MIB, `RSS grew ${(grown / MIB).toFixed(2)} MiB`);
});

Deno.test("lookups, lists and node-device XML 10,000 times grow RSS by less than 10 MiB", async () => {
  await using world = await writeTempWorld(WORLD);
  using conn = Connection.open(world.uri);
  const grown = growth(ROUNDS, () => {
    using dom = conn.lookupDomainByName("leaky");
    for (const listed of conn.listDomains()) listed.free();
    using dev = nodeDeviceNamed(conn, "computer");
    dev.xml();
    void dom.uuid;
  });
  console.log(`handles: ${ROUNDS} rounds, RSS grew ${(grown / MIB).toFixed(2)} MiB`);
  assert.ok(grown < 10 * MIB, `RSS grew ${(grown / MIB).toFixed(2)} MiB`);
});
