// Ready derivations, one priority heap per platform (system + required
// features), as Buildbarn keeps one queue per platform: dispatch only looks at
// queues some free worker can serve, so an unservable backlog costs nothing.
// Removal is lazy: an entry whose token is no longer current is skipped.
import { comparePriority, type PriorityKey } from "./priority.js";
import type { DrvNode, DrvPath } from "./types.js";

/** One entry of a platform queue. */
export interface ReadyEntry {
  drvPath: DrvPath;
  key: PriorityKey;
  token: number;
}

/** A min-heap by comparePriority (best first). */
class Heap {
  private readonly items: ReadyEntry[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): ReadyEntry | undefined {
    return this.items[0];
  }

  // Both sifts move the entry along a hole and place it once (no swaps): a heap of the
  // nixpkgs graph's ready set holds ~15,000 entries, and dispatch pops one per assignment.
  push(e: ReadyEntry): void {
    const a = this.items;
    let i = a.length;
    a.push(e);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (comparePriority(e.key, a[parent].key) >= 0) break;
      a[i] = a[parent];
      i = parent;
    }
    a[i] = e;
  }

  pop(): ReadyEntry | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      const n = a.length;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const child = r < n && comparePriority(a[r].key, a[l].key) < 0 ? r : l;
        if (comparePriority(a[child].key, last.key) >= 0) break;
        a[i] = a[child];
        i = child;
      }
      a[i] = last;
    }
    return top;
  }
}

/** The ready queue of one platform. */
export interface PlatformQueue {
  readonly system: string;
  readonly features: readonly string[];
  /** Best live entry, discarding stale ones. */
  peek(): ReadyEntry | undefined;
}

/** Platform key: system plus sorted required features. */
export function platformKey(node: DrvNode): string {
  return `${node.system}|${[...node.requiredSystemFeatures].sort().join(",")}`;
}

class Queue implements PlatformQueue {
  readonly heap = new Heap();
  constructor(
    readonly system: string,
    readonly features: readonly string[],
    private readonly isLive: (e: ReadyEntry) => boolean,
  ) {}

  peek(): ReadyEntry | undefined {
    while (this.heap.size > 0 && !this.isLive(this.heap.peek()!)) this.heap.pop();
    return this.heap.peek();
  }
}

/** All ready derivations, by platform, in priority order. */
export class ReadyQueues {
  private readonly queues = new Map<string, Queue>();
  private readonly live = new Map<DrvPath, { token: number; queue: Queue }>();
  private nextToken = 1;

  /** Number of derivations queued. */
  get size(): number {
    return this.live.size;
  }

  /** True when `drvPath` is queued. */
  has(drvPath: DrvPath): boolean {
    return this.live.has(drvPath);
  }

  /** Queues (or re-queues with a new key) a ready derivation. */
  push(node: DrvNode, key: PriorityKey): void {
    const pk = platformKey(node);
    let q = this.queues.get(pk);
    if (q === undefined) {
      q = new Queue(node.system, [...node.requiredSystemFeatures].sort(), (e) => this.live.get(e.drvPath)?.token === e.token);
      this.queues.set(pk, q);
    }
    const token = this.nextToken++;
    this.live.set(node.drvPath, { token, queue: q });
    q.heap.push({ drvPath: node.drvPath, key, token });
  }

  /** Takes a derivation out (lazily: its heap entry is skipped later). */
  remove(drvPath: DrvPath): void {
    this.live.delete(drvPath);
  }

  /** Platform queues with at least one live entry. */
  nonEmpty(): PlatformQueue[] {
    return [...this.queues.values()].filter((q) => q.peek() !== undefined);
  }

  /** Removes and returns the best live entry of `queue`. */
  pop(queue: PlatformQueue): ReadyEntry | undefined {
    const e = queue.peek();
    if (e !== undefined) {
      (queue as Queue).heap.pop();
      this.live.delete(e.drvPath);
    }
    return e;
  }
}
