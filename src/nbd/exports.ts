import type { BlockBackend } from './backend.js';

export interface NbdExport {
  readonly name: string;
  readonly description: string;
  readonly backend: BlockBackend;
}

/**
 * Which exports a server offers. The file server has a fixed list; the SDC's list changes
 * as volumes are mapped and unmapped, so the handshake asks at the moment a client asks.
 */
export interface ExportRegistry {
  list(): readonly NbdExport[];
  /** The export a client asked for; the empty name means the default export. */
  find(name: string): NbdExport | undefined;
  /** A client started transmission on `entry` (the SDC counts open volumes). */
  attached?(entry: NbdExport): void;
  /** That client's connection ended. */
  detached?(entry: NbdExport): void;
}

export class StaticExports implements ExportRegistry {
  private readonly byName = new Map<string, NbdExport>();

  constructor(private readonly exports: readonly NbdExport[]) {
    for (const entry of exports) this.byName.set(entry.name, entry);
  }

  list(): readonly NbdExport[] {
    return this.exports;
  }

  find(name: string): NbdExport | undefined {
    if (name === '') return this.byName.get('') ?? this.exports[0];
    return this.byName.get(name);
  }
}
