/**
 * libvirt's C API bound with `Deno.dlopen`. The only folder of this project that touches pointers.
 * Nothing is loaded at import time; the first `Connection.open` loads `libvirt.so.0` (or
 * `PASSTHROUGH_LIBVIRT_PATH`).
 *
 * @module
 */
export * from "./connection.ts";
export * from "./domain.ts";
export * from "./node_device.ts";
export * from "./network.ts";
export * from "./errors.ts";
export * from "./port.ts";
export { DEFAULT_LIBVIRT_PATH, LIBVIRT_PATH_ENV, LibvirtLoadError } from "./library.ts";
export { LibcFsError, libcSysfsReader, readXattr, signalProcess } from "./libc_fs.ts";
export { UriProgramError, uriProgramReason } from "./uri_check.ts";
export {
  nodeDeviceSource,
  type OpenNodeDeviceSource,
  openNodeDeviceSource,
} from "./nodedev_source.ts";
