/**
 * libvirt test-driver worlds for tests: committed `<node>` files in `tests/fixtures/worlds/` and
 * temporary ones written from a string. The test driver needs an absolute path in its URI.
 *
 * @module
 */

import { readDefinition, type World } from "../../lib/plan/world.ts";
import type { Connection } from "../../ffi/connection.ts";
import type { NodeDevice } from "../../ffi/node_device.ts";

const WORLDS = new URL("../fixtures/worlds/", import.meta.url);

/** The absolute path of `tests/fixtures/worlds/NAME.xml`. */
export function worldPath(name: string): string {
  return new URL(`${name}.xml`, WORLDS).pathname;
}

/** `test:///ABS/PATH/NAME.xml` for a committed world. */
export function worldUri(name: string): string {
  return `test://${worldPath(name)}`;
}

/** A world written to a temporary directory; removed on dispose. */
export interface TempWorld extends AsyncDisposable {
  path: string;
  uri: string;
  remove(): Promise<void>;
}

/** Writes `xml` (a `<node>` document) to a fresh temporary directory and returns its URI. */
export async function writeTempWorld(xml: string): Promise<TempWorld> {
  const dir = await Deno.makeTempDir({ prefix: "passthrough-world-" });
  const path = `${dir}/world.xml`;
  await Deno.writeTextFile(path, xml);
  const remove = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  return { path, uri: `test://${path}`, remove, [Symbol.asyncDispose]: remove };
}

/** The `computer` device every world with node devices needs (with its `<hardware><uuid>`). */
export const COMPUTER_DEVICE = `<device>
    <name>computer</name>
    <capability type='system'>
      <hardware>
        <vendor>Test</vendor>
        <version>1</version>
        <serial>0</serial>
        <uuid>3b5b4b9e-5e7c-4d1a-9f3e-1c2d3e4f5a6b</uuid>
      </hardware>
    </capability>
  </device>`;

/** A minimal test-driver domain; `running: false` adds `<test:runstate>5</test:runstate>`. */
export function testDomainXml(
  name: string,
  options: { uuid?: string; running?: boolean } = {},
): string {
  const uuid = options.uuid === undefined ? "" : `\n    <uuid>${options.uuid}</uuid>`;
  const runstate = options.running === false ? "\n    <test:runstate>5</test:runstate>" : "";
  return `<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>${name}</name>${uuid}
    <memory unit='KiB'>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>${runstate}
  </domain>`;
}

/** One domain of {@link dataWorld}: its persistent XML, or that and its state and live XML. */
export type DataDomain = string | { xml: string; active?: boolean; liveXml?: string };

/**
 * A planner world built from definitions alone, read as `readWorld()` reads libvirt's: for pure
 * planner tests with no libvirt at all.
 */
export function dataWorld(domains: Record<string, DataDomain>): World {
  return {
    uri: "test:///data",
    domains: Object.entries(domains).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(
      ([name, domain]) => {
        const { xml, active = false, liveXml } = typeof domain === "string"
          ? { xml: domain }
          : domain;
        return {
          name,
          active,
          persistent: readDefinition(xml),
          live: active ? readDefinition(liveXml ?? xml) : null,
        };
      },
    ),
  };
}

/** The node device `name` of `conn`, every other listed handle freed. */
export function nodeDeviceNamed(conn: Connection, name: string): NodeDevice {
  const devices = conn.listNodeDevices();
  const found = devices.find((device) => device.name === name);
  for (const device of devices) if (device !== found) device.free();
  if (found === undefined) throw new Error(`No node device "${name}" in ${conn.uri}`);
  return found;
}
