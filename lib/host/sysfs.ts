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
   * Opens a file for reads at offsets, or `null` when it is missing. Discovery reads the live
   * `config` file this way: every 4 bytes read is a configuration cycle on the device, and the
   * capability walk needs only a few dozen bytes.
   */
  openFile(path: string): SysfsFile | null;
}

/** An open file read at offsets. Dispose it when done (`using`). */
export interface SysfsFile extends Disposable {
  /** Up to `length` bytes at `offset`: fewer at the end of the file or where reads are denied. */
  readAt(offset: number, length: number): Uint8Array;
}

function isMissing(error: unknown): boolean {
  return error instanceof Deno.errors.NotFound ||
    (error instanceof Error &&
      /ENOTDIR|EINVAL|Not a directory|Invalid argument/.test(error.message));
}

/**
 * A {@link SysfsReader} over `Deno.readDirSync`/`readFileSync`/`readLinkSync`/`openSync`: needs
 * only `--allow-read`, and works for captured trees anywhere except under `/sys` and `/proc`.
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
 * {
 *   using file = reader.openFile(`${dir}/vendor`)!;
 *   assertEquals(new TextDecoder().decode(file.readAt(2, 4)), "10de");
 * }
 * assertEquals(reader.openFile(`${dir}/missing`), null);
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
    openFile(path) {
      try {
        return new DenoFile(path, Deno.openSync(path, { read: true }));
      } catch (error) {
        if (isMissing(error)) return null;
        throw error;
      }
    },
  };
}

/** {@link SysfsFile} over a `Deno.FsFile`: a seek, then reads until `length` or the end. */
class DenoFile implements SysfsFile {
  #open = true;
  constructor(readonly path: string, readonly file: Deno.FsFile) {}
  readAt(offset: number, length: number): Uint8Array {
    if (!this.#open) throw new Error(`Cannot read "${this.path}": the file was closed`);
    const bytes = new Uint8Array(length);
    let filled = 0;
    try {
      this.file.seekSync(offset, Deno.SeekMode.Start);
      while (filled < length) {
        const n = this.file.readSync(bytes.subarray(filled));
        if (n === null || n === 0) break;
        filled += n;
      }
    } catch (error) {
      // As the libc reader: what cannot be read at this offset reads as absent.
      if (!isMissing(error) && !(error instanceof Deno.errors.IsADirectory)) throw error;
    }
    return bytes.slice(0, filled);
  }
  [Symbol.dispose](): void {
    if (this.#open) this.file.close();
    this.#open = false;
  }
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
