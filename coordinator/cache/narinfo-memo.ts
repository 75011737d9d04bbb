// Published narinfos held in memory, so the cache's hottest read (one narinfo
// per path of every closure anybody asks for) touches no file. The set of hash
// parts is complete (loaded once, then kept by every put and remove through the
// storage), so a 404 needs no file either and cannot hide a later publish; the
// bytes of recently read narinfos are kept up to a byte budget (LRU).

/** Bookkeeping per entry beyond its bytes (Map slot, Buffer object), counted against the budget. */
const ENTRY_OVERHEAD = 160;

/** Which narinfos exist, and the bytes of recently used ones. */
export class NarInfoMemo {
  private readonly known = new Set<string>();
  /** Insertion order is recency: the first key is the least recently used. */
  private readonly bytes = new Map<string, Buffer>();
  private held = 0;
  /** Bumped by every change, so a read that raced a change does not store what it read. */
  private generation = 0;

  constructor(private readonly maxBytes: number) {}

  /** Records a name found at start-up. */
  load(name: string): void {
    this.known.add(name);
  }

  /** True if the narinfo exists. */
  has(name: string): boolean {
    return this.known.has(name);
  }

  /** Its bytes if held; marks them recently used. */
  get(name: string): Buffer | undefined {
    const b = this.bytes.get(name);
    if (b === undefined) return undefined;
    this.bytes.delete(name);
    this.bytes.set(name, b);
    return b;
  }

  /** A token to pass to `remember` for a read that starts now. */
  readStarted(): number {
    return this.generation;
  }

  /** Keeps bytes read from disk, unless the narinfo changed since the read began. */
  remember(name: string, data: Buffer, startedAt: number): void {
    if (startedAt !== this.generation || !this.known.has(name)) return;
    this.hold(name, data);
  }

  /** A narinfo was written (published or replaced). */
  written(name: string, data: Buffer): void {
    this.generation++;
    this.known.add(name);
    this.hold(name, data);
  }

  /** A narinfo was written from a stream, its bytes not at hand: they are read on first use. */
  writtenUnseen(name: string): void {
    this.generation++;
    this.known.add(name);
    this.drop(name);
  }

  /** A narinfo is being removed: forget it before the file goes, so it is not served meanwhile. */
  removed(name: string): void {
    this.generation++;
    this.known.delete(name);
    this.drop(name);
  }

  /** Narinfos known, and bytes held for them (for tests and the benchmark). */
  stats(): { known: number; held: number; heldBytes: number } {
    return { known: this.known.size, held: this.bytes.size, heldBytes: this.held };
  }

  private hold(name: string, data: Buffer): void {
    this.drop(name);
    const cost = data.length + ENTRY_OVERHEAD;
    if (cost > this.maxBytes) return;
    this.bytes.set(name, data);
    this.held += cost;
    for (const [oldest, b] of this.bytes) {
      if (this.held <= this.maxBytes) break;
      this.bytes.delete(oldest);
      this.held -= b.length + ENTRY_OVERHEAD;
    }
  }

  private drop(name: string): void {
    const b = this.bytes.get(name);
    if (b === undefined) return;
    this.bytes.delete(name);
    this.held -= b.length + ENTRY_OVERHEAD;
  }
}
