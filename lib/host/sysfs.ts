/**
 * The injected reader discovery reads a sysfs-shaped tree through, and a plain `Deno` file-system
 * implementation of it for captured trees. The real `/sys` is read through `ffi/libc_fs.ts`
 * instead, because Deno 2.x refuses reads under `/sys` and `/proc` without `--allow-all`.
 *
 * @module
 */

/**
 * Reads a sysfs-shaped tree. Every method takes an absolute path and returns `null` when the
 * entry does not exist, so discovery never needs exceptions for optional attributes.
 */
export interface SysfsReader {
  /** Entry names of a directory (without `.` and `..`), or `null` when it is missing. */
  listDir(path: string): string[] | null;
  /** A small text file's contents as is, or `null` when it is missing or unreadable. */
  readText(path: string): string | null;
  /** Up to `maxBytes` bytes of a file (e.g. PCI `config`), or `null` when it is missing. */
  readBytes(path: string, maxBytes: number): Uint8Array | null;
  /** A symbolic link's target as stored (often relative), or `null` when it is not a link. */
  readLink(path: string): string | null;
  /**
   * Optional: opens the directory `path` once for several reads of its entries by name (one
   * path lookup instead of one per file). Use {@link openSysfsDir}, which falls back to the
   * path-based methods for readers without it.
   */
  openDir?(path: string): SysfsDirReader;
  /**
   * Optional: starts reading the whole files `paths` in the background (io_uring on Linux), or
   * returns `null` when this reader cannot here. Results have the meaning of
   * {@link SysfsReader.readText}; discovery reads every device's attributes this way when it can.
   */
  readFiles?(paths: readonly string[]): SysfsFileBatch | null;
}

/**
 * Files being read in the background (see {@link SysfsReader.readFiles}), indexed like the paths
 * given. Reading an entry waits for it. Dispose the batch when done (`using`): it waits for the
 * reads still in flight.
 */
export interface SysfsFileBatch extends Disposable {
  /** Lets the batch queue more reads; cheap and never waits. Call it during other work. */
  poll(): void;
  /** File `index`'s text as is, or `null` when it is missing, as `readText` would say. */
  readText(index: number): string | null;
  /**
   * Up to `maxBytes` (at most 4,096) of file `index`, lent to `use` as in
   * {@link SysfsDirReader.withBytes}, or `null` when it is missing.
   */
  withBytes<T>(index: number, maxBytes: number, use: (bytes: Uint8Array) => T): T | null;
}

/**
 * Reads the entries of one directory by name (`uevent`, `config`, `iommu_group`). A missing
 * directory reads as missing entries. Dispose it when done (`using`).
 */
export interface SysfsDirReader extends Disposable {
  /** An entry's text as is, or `null` when it is missing or unreadable. */
  readText(name: string): string | null;
  /** Up to `maxBytes` bytes of an entry, or `null` when it is missing. */
  readBytes(name: string, maxBytes: number): Uint8Array | null;
  /** A link entry's target as stored, or `null` when it is not a link. */
  readLink(name: string): string | null;
  /**
   * Optional: lends up to `maxBytes` of an entry to `use` without copying them (the bytes are
   * the reader's own buffer, valid only during the call), and returns what `use` returns, or
   * `null` when the entry is missing. Use {@link withSysfsBytes}, which falls back to `readBytes`.
   */
  withBytes?<T>(name: string, maxBytes: number, use: (bytes: Uint8Array) => T): T | null;
  /**
   * Optional: opens an entry for reads at offsets (`pread`), or `null` when it is missing.
   * Discovery uses it for the live `config` file, where every 4 bytes read is a configuration
   * cycle on the device and only a few dozen bytes are needed.
   */
  openFile?(name: string): SysfsFile | null;
}

/** An open file read at offsets. Dispose it when done (`using`). */
export interface SysfsFile extends Disposable {
  /** Up to `length` bytes at `offset`: fewer at the end of the file or where reads are denied. */
  readAt(offset: number, length: number): Uint8Array;
}

/**
 * A {@link SysfsDirReader} for `path`: the reader's own `openDir` when it has one, else the
 * path-based methods with `path/name`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/class`, "0x030000\n");
 * {
 *   using entries = openSysfsDir(denoFsReader(), dir);
 *   assertEquals(entries.readText("class"), "0x030000\n");
 *   assertEquals(entries.readLink("driver"), null);
 * }
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function openSysfsDir(reader: SysfsReader, path: string): SysfsDirReader {
  if (reader.openDir !== undefined) return reader.openDir(path);
  return {
    readText: (name) => reader.readText(`${path}/${name}`),
    readBytes: (name, maxBytes) => reader.readBytes(`${path}/${name}`, maxBytes),
    readLink: (name) => reader.readLink(`${path}/${name}`),
    [Symbol.dispose]() {},
  };
}

/**
 * Up to `maxBytes` of the entry `name`, lent to `use` (see {@link SysfsDirReader.withBytes}), or
 * `null` when the entry is missing. Discovery parses each `config` this way: a copy of every
 * device's bytes would be most of what it allocates.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeFileSync(`${dir}/config`, new Uint8Array([0x86, 0x80, 0x57, 0x0d]));
 * {
 *   using entries = openSysfsDir(denoFsReader(), dir);
 *   assertEquals(withSysfsBytes(entries, "config", 2, (b) => b.length), 2);
 *   assertEquals(withSysfsBytes(entries, "missing", 2, (b) => b.length), null);
 * }
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function withSysfsBytes<T>(
  dir: SysfsDirReader,
  name: string,
  maxBytes: number,
  use: (bytes: Uint8Array) => T,
): T | null {
  if (dir.withBytes !== undefined) return dir.withBytes(name, maxBytes, use);
  const bytes = dir.readBytes(name, maxBytes);
  return bytes === null ? null : use(bytes);
}

function isMissing(error: unknown): boolean {
  return error instanceof Deno.errors.NotFound ||
    (error instanceof Error &&
      /ENOTDIR|EINVAL|Not a directory|Invalid argument/.test(error.message));
}

/**
 * A {@link SysfsReader} over `Deno.readDirSync`/`readFileSync`/`readLinkSync`: needs only
 * `--allow-read`, and works for captured trees anywhere except under `/sys` and `/proc`.
 * Permission errors are thrown, not turned into `null`, so a missing flag is reported as such.
 *
 * @example
 * ```ts
 * import { assertEquals } from "../../tests/helpers/assert.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/vendor`, "0x10de\n");
 * const reader = denoFsReader();
 * assertEquals(reader.readText(`${dir}/vendor`), "0x10de\n");
 * assertEquals(reader.readText(`${dir}/missing`), null);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function denoFsReader(): SysfsReader {
  const decoder = new TextDecoder();
  return {
    listDir(path) {
      try {
        const names: string[] = [];
        for (const entry of Deno.readDirSync(path)) names.push(entry.name);
        return names;
      } catch (error) {
        if (isMissing(error)) return null;
        throw error;
      }
    },
    readText(path) {
      try {
        return decoder.decode(Deno.readFileSync(path));
      } catch (error) {
        if (isMissing(error) || error instanceof Deno.errors.IsADirectory) return null;
        throw error;
      }
    },
    readBytes(path, maxBytes) {
      try {
        const bytes = Deno.readFileSync(path);
        return bytes.length > maxBytes ? bytes.slice(0, maxBytes) : bytes;
      } catch (error) {
        if (isMissing(error) || error instanceof Deno.errors.IsADirectory) return null;
        throw error;
      }
    },
    readLink(path) {
      try {
        return Deno.readLinkSync(path);
      } catch (error) {
        if (isMissing(error)) return null;
        throw error;
      }
    },
  };
}

/** The last path component (`../../../bus/pci/drivers/nvme` → `nvme`). */
export function baseName(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

/** The text of a sysfs attribute without its trailing newline, or `null`. */
export function readAttribute(reader: SysfsReader, path: string): string | null {
  const text = reader.readText(path);
  if (text === null) return null;
  const trimmed = text.trim();
  return trimmed;
}
