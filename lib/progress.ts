// A one-line progress bar for the command line, written by hand (~50 lines) rather than adding a
// dependency. It draws only when the stream is a terminal: to a pipe, a file or a test harness it
// writes nothing at all. The line is redrawn in place ('\r' + erase line) and erased by done(), so
// nothing is left behind. It appears only after `delayMs`, so quick loads show nothing.

/** The part of a stream the bar needs (process.stderr, or a fake one in tests). */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(s: string): unknown;
}

const CLEAR = '\r\x1b[2K';

export class ProgressBar {
  readonly enabled: boolean;
  #fraction = 0;
  #status = '';
  #drawn = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  readonly #start = Date.now();

  constructor(
    readonly label: string,
    readonly stream: ProgressStream = process.stderr,
    readonly opts: { delayMs?: number; intervalMs?: number } = {},
  ) {
    this.enabled = stream.isTTY === true && process.env.TERM !== 'dumb';
    if (!this.enabled) return;
    // Redrawn on a timer (not on every update): the elapsed time moves while a worker thread
    // repacks weights, and a fast token stream does not flood the terminal.
    this.#timer = setInterval(() => this.#draw(), opts.intervalMs ?? 100);
    this.#timer.unref();
  }

  /** fraction: 0..1 of the whole job; status: a short note after the bar ("repacking", "12 tok/s"). */
  update(fraction: number, status = ''): void {
    this.#fraction = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
    this.#status = status;
  }

  #draw(): void {
    const elapsed = Date.now() - this.#start;
    if (elapsed < (this.opts.delayMs ?? 300)) return;
    const pct = `${Math.floor(this.#fraction * 100)}%`.padStart(4);
    const tail = ` ${pct} ${this.#status} ${(elapsed / 1000).toFixed(1)}s`;
    const columns = this.stream.columns || 80; // 0 on a terminal with no size
    const width = Math.max(10, Math.min(40, columns - this.label.length - tail.length - 4));
    const filled = Math.round(this.#fraction * width);
    const line = `${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}]${tail}`;
    this.stream.write(CLEAR + line.slice(0, Math.max(0, columns - 1)));
    this.#drawn = true;
  }

  /** Stops the bar and erases its line (if it was ever drawn). Safe to call twice. */
  done(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#drawn) this.stream.write(CLEAR);
    this.#drawn = false;
  }
}
