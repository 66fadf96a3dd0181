/**
 * Fixture builders for tests, benchmarks and the demo: host descriptions (captured from real
 * hosts or generated) written out as sysfs-shaped trees that discovery and `lspci` read like
 * `/sys` ({@link buildHostTree}), and as libvirt test-driver worlds whose node devices
 * `discoverViaLibvirt` reads as the same host ({@link nodeDeviceWorldXml}, opened as
 * `test:///ABS/PATH.xml`).
 *
 * @module
 */

export type { HostDescription, HostDeviceDescription, HostProcDescription } from "./host_tree.ts";
export { buildHostTree, HostDescriptionError, loadHostDescription } from "./host_tree.ts";
export { topologyFromDescription } from "./host_description.ts";
export {
  nodeDeviceName,
  type NodeDeviceWorldOptions,
  nodeDeviceWorldXml,
} from "./nodedev_world.ts";
