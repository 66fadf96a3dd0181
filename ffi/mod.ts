/**
 * libvirt's C API bound with `Deno.dlopen`. The only folder of this project that touches pointers.
 *
 * @module
 */
export {};
