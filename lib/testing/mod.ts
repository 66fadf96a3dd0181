/**
 * Fixture builders for tests, benchmarks and the demo: host descriptions (captured from real
 * hosts or generated) written out as sysfs-shaped trees that discovery and `lspci` read like
 * `/sys`, and libvirt test-driver worlds.
 *
 * @module
 */

export type { HostDescription, HostDeviceDescription, HostProcDescription } from "./host_tree.ts";
export { buildHostTree, HostDescriptionError, loadHostDescription } from "./host_tree.ts";
export { topologyFromDescription } from "./host_description.ts";
