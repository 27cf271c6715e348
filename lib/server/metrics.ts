// Server metrics in the Prometheus text exposition format (version 0.0.4): counters, gauges read
// at scrape time, and cumulative histograms, without a client library.

type Labels = Record<string, string>;

const labelText = (l: Labels) => {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
};

class Counter {
  #values = new Map<string, { labels: Labels; value: number }>();
  constructor(readonly name: string, readonly help: string) {}
  inc(labels: Labels = {}, by = 1): void {
    const key = labelText(labels);
    const v = this.#values.get(key);
    if (v) v.value += by;
    else this.#values.set(key, { labels, value: by });
  }
  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    if (this.#values.size === 0) out.push(`${this.name} 0`);
    for (const [key, v] of this.#values) out.push(`${this.name}${key} ${v.value}`);
    return out;
  }
}

class Histogram {
  #counts: number[];
  #sum = 0;
  #count = 0;
  constructor(readonly name: string, readonly help: string, readonly buckets: number[]) {
    this.#counts = new Array(buckets.length).fill(0);
  }
  observe(seconds: number): void {
    for (let i = 0; i < this.buckets.length; i++) if (seconds <= this.buckets[i]) this.#counts[i]++;
    this.#sum += seconds;
    this.#count++;
  }
  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((b, i) => out.push(`${this.name}_bucket{le="${b}"} ${this.#counts[i]}`));
    out.push(`${this.name}_bucket{le="+Inf"} ${this.#count}`, `${this.name}_sum ${this.#sum}`, `${this.name}_count ${this.#count}`);
    return out;
  }
}

/** One unlabelled sample read at scrape time (the engine's counters come this way too). */
const single = (name: string, help: string, value: number, type: 'gauge' | 'counter' = 'gauge') => [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${value}`];

/** What the server reports at scrape time besides its own counters. */
export interface Snapshot {
  inFlight: number;
  running: number;
  waiting: number;
  kvPagesInUse: number;
  kvPages: number;
  preemptions: number;
  steps: number;
}

export class Metrics {
  readonly requests = new Counter('tessera_requests_total', 'HTTP requests answered, by route and status code.');
  readonly promptTokens = new Counter('tessera_prompt_tokens_total', 'Prompt tokens of completed generations.');
  readonly generatedTokens = new Counter('tessera_generated_tokens_total', 'Tokens generated.');
  readonly ttft = new Histogram('tessera_time_to_first_token_seconds', 'From the request arriving to its first generated token.', [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
  ]);
  readonly perToken = new Histogram('tessera_time_per_output_token_seconds', 'Between successive generated tokens of one generation.', [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
  ]);
  readonly duration = new Histogram('tessera_request_duration_seconds', 'From the request arriving to its last byte (generation routes).', [
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
  ]);

  render(s: Snapshot): string {
    return [
      ...this.requests.render(),
      ...this.promptTokens.render(),
      ...this.generatedTokens.render(),
      ...this.ttft.render(),
      ...this.perToken.render(),
      ...this.duration.render(),
      ...single('tessera_requests_in_flight', 'Generations the server holds (running or queued).', s.inFlight),
      ...single('tessera_requests_running', 'Requests with a sequence in the KV cache.', s.running),
      ...single('tessera_queue_depth', 'Requests waiting for the engine to admit them.', s.waiting),
      ...single('tessera_kv_pages_in_use', 'KV cache pages held by sequences.', s.kvPagesInUse),
      ...single('tessera_kv_pages', 'KV cache pages in the pool.', s.kvPages),
      ...single('tessera_preemptions_total', 'Requests preempted (KV released and recomputed) since the model was loaded.', s.preemptions, 'counter'),
      ...single('tessera_steps_total', 'Forward steps run since the model was loaded.', s.steps, 'counter'),
    ].join('\n') + '\n';
  }
}
