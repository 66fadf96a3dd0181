/**
 * PCI basics: canonical addresses (`0000:01:00.0`) and their libvirt form, device classes, and
 * the capability walk over a function's `config` space (FLR, ACS, serial number).
 *
 * @module
 */

export * from "./address.ts";
