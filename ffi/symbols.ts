/**
 * The libvirt and libc symbols passthrough binds, as one declarative table each. Every entry
 * carries its C prototype.
 *
 * Conventions (see FACTS.md): `const char*` parameters are `"buffer"` (a NUL-terminated
 * `Uint8Array`, or `null`), out-parameters are `"buffer"` (`BigUint64Array(1)` for `T**` and
 * `unsigned long*`, `Int32Array(1)` for `int*`), handles are `"pointer"`, flags are `"u32"`.
 *
 * @module
 */

/** libvirt's public API as used by passthrough (`libvirt.so.0`). */
export const LIBVIRT_SYMBOLS = {
  // virConnectPtr virConnectOpen(const char *name);
  virConnectOpen: { parameters: ["buffer"], result: "pointer" },
  // virConnectPtr virConnectOpenReadOnly(const char *name);
  virConnectOpenReadOnly: { parameters: ["buffer"], result: "pointer" },
  // int virConnectClose(virConnectPtr conn);
  virConnectClose: { parameters: ["pointer"], result: "i32" },
  // char *virConnectGetURI(virConnectPtr conn);  (caller frees)
  virConnectGetURI: { parameters: ["pointer"], result: "pointer" },
  // int virConnectGetLibVersion(virConnectPtr conn, unsigned long *libVer);
  virConnectGetLibVersion: { parameters: ["pointer", "buffer"], result: "i32" },
  // int virConnectListAllDomains(virConnectPtr conn, virDomainPtr **domains, unsigned int flags);
  virConnectListAllDomains: { parameters: ["pointer", "buffer", "u32"], result: "i32" },
  // int virConnectListAllNodeDevices(virConnectPtr conn, virNodeDevicePtr **devices,
  //                                  unsigned int flags);
  virConnectListAllNodeDevices: { parameters: ["pointer", "buffer", "u32"], result: "i32" },

  // virDomainPtr virDomainLookupByName(virConnectPtr conn, const char *name);
  virDomainLookupByName: { parameters: ["pointer", "buffer"], result: "pointer" },
  // virDomainPtr virDomainDefineXMLFlags(virConnectPtr conn, const char *xml, unsigned int flags);
  virDomainDefineXMLFlags: { parameters: ["pointer", "buffer", "u32"], result: "pointer" },
  // int virDomainUndefineFlags(virDomainPtr domain, unsigned int flags);
  virDomainUndefineFlags: { parameters: ["pointer", "u32"], result: "i32" },
  // int virDomainFree(virDomainPtr domain);
  virDomainFree: { parameters: ["pointer"], result: "i32" },
  // const char *virDomainGetName(virDomainPtr domain);  (owned by the domain: never free)
  virDomainGetName: { parameters: ["pointer"], result: "pointer" },
  // int virDomainGetUUIDString(virDomainPtr domain, char *buf);  (buf: VIR_UUID_STRING_BUFLEN)
  virDomainGetUUIDString: { parameters: ["pointer", "buffer"], result: "i32" },
  // int virDomainGetState(virDomainPtr domain, int *state, int *reason, unsigned int flags);
  virDomainGetState: { parameters: ["pointer", "buffer", "buffer", "u32"], result: "i32" },
  // unsigned int virDomainGetID(virDomainPtr domain);  ((unsigned int)-1 when shut off)
  virDomainGetID: { parameters: ["pointer"], result: "u32" },
  // int virDomainIsActive(virDomainPtr dom);
  virDomainIsActive: { parameters: ["pointer"], result: "i32" },
  // int virDomainIsPersistent(virDomainPtr dom);
  virDomainIsPersistent: { parameters: ["pointer"], result: "i32" },
  // int virDomainHasManagedSaveImage(virDomainPtr dom, unsigned int flags);
  virDomainHasManagedSaveImage: { parameters: ["pointer", "u32"], result: "i32" },
  // char *virDomainGetXMLDesc(virDomainPtr domain, unsigned int flags);  (caller frees)
  virDomainGetXMLDesc: { parameters: ["pointer", "u32"], result: "pointer" },
  // int virDomainAttachDeviceFlags(virDomainPtr domain, const char *xml, unsigned int flags);
  virDomainAttachDeviceFlags: { parameters: ["pointer", "buffer", "u32"], result: "i32" },
  // int virDomainDetachDeviceFlags(virDomainPtr domain, const char *xml, unsigned int flags);
  virDomainDetachDeviceFlags: { parameters: ["pointer", "buffer", "u32"], result: "i32" },

  // const char *virNodeDeviceGetName(virNodeDevicePtr dev);  (owned by the device: never free)
  virNodeDeviceGetName: { parameters: ["pointer"], result: "pointer" },
  // char *virNodeDeviceGetXMLDesc(virNodeDevicePtr dev, unsigned int flags);  (caller frees)
  virNodeDeviceGetXMLDesc: { parameters: ["pointer", "u32"], result: "pointer" },
  // int virNodeDeviceFree(virNodeDevicePtr dev);
  virNodeDeviceFree: { parameters: ["pointer"], result: "i32" },

  // int virConnectListAllNetworks(virConnectPtr conn, virNetworkPtr **nets, unsigned int flags);
  virConnectListAllNetworks: { parameters: ["pointer", "buffer", "u32"], result: "i32" },
  // const char *virNetworkGetName(virNetworkPtr network);  (owned by the network: never free)
  virNetworkGetName: { parameters: ["pointer"], result: "pointer" },
  // char *virNetworkGetXMLDesc(virNetworkPtr network, unsigned int flags);  (caller frees)
  virNetworkGetXMLDesc: { parameters: ["pointer", "u32"], result: "pointer" },
  // int virNetworkFree(virNetworkPtr network);
  virNetworkFree: { parameters: ["pointer"], result: "i32" },

  // virErrorPtr virGetLastError(void);  (thread-local, owned by libvirt)
  virGetLastError: { parameters: [], result: "pointer" },
  // void virResetLastError(void);
  virResetLastError: { parameters: [], result: "void" },
  // void virSetErrorFunc(void *userData, virErrorFunc handler);
  virSetErrorFunc: { parameters: ["pointer", "function"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

/** `typedef void (*virErrorFunc)(void *userData, virErrorPtr error);` */
export const ERROR_FUNC_DEFINITION = {
  parameters: ["pointer", "pointer"],
  result: "void",
} as const satisfies Deno.UnsafeCallbackDefinition;

/** Byte offsets in `struct virError` on 64-bit Linux (FACTS.md). */
export const VIR_ERROR_LAYOUT = { code: 0, domain: 4, message: 8, level: 16 } as const;

/** `VIR_UUID_STRING_BUFLEN`: 36 characters and the NUL. */
export const VIR_UUID_STRING_BUFLEN = 37;

/** `virDomainXMLFlags`. */
export const VIR_DOMAIN_XML_SECURE = 1;
/** `virDomainXMLFlags`: the persistent (next boot) definition. */
export const VIR_DOMAIN_XML_INACTIVE = 2;
/** `virDomainDefineFlags`: validate against the RNG schema. */
export const VIR_DOMAIN_DEFINE_VALIDATE = 1;
/** `virDomainModificationImpact`. */
export const VIR_DOMAIN_AFFECT_LIVE = 1;
/** `virDomainModificationImpact`. */
export const VIR_DOMAIN_AFFECT_CONFIG = 2;
/** `virConnectListAllNodeDeviceFlags`: PCI devices only. */
export const VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV = 1 << 1;
