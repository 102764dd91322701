/** Fault settings of the simulated transport, as `POST /sim/faults` takes them and `GET /sim/faults` shows them. */
export interface FaultSettings {
  /** Probability (0..1) that a message is lost. */
  drop: number;
  /** Probability (0..1) that a message is delivered twice. */
  duplicate: number;
  /** Adds a random extra delay (0..REORDER_WINDOW_MS) per copy so later messages can overtake earlier ones. */
  reorder: boolean;
  /** Fixed extra latency for every copy. */
  delay_ms: number;
  /** On input: how long the router-facing API answers 503. On output: how much of that is left. */
  down_for_ms: number;
  /** Probability (0..1) that a ciphertext reaches a device with one byte flipped (a corrupted copy). */
  corrupt: number;
  /** On input: corrupt exactly the next N ciphertexts to devices. On output: how many are left. */
  corrupt_next: number;
}

/** The widest random extra delay `reorder` adds, in milliseconds. */
export const REORDER_WINDOW_MS = 50;

const NONE: FaultSettings = { drop: 0, duplicate: 0, reorder: false, delay_ms: 0, down_for_ms: 0, corrupt: 0, corrupt_next: 0 };

/**
 * Decides the fate of each message crossing the transport. The random source and clock are injectable
 * so tests are deterministic.
 */
export class Faults {
  private settings: FaultSettings = { ...NONE };
  private downUntil = 0;
  /** Copies dropped since the settings were last set: tests wait for a drop instead of sleeping. */
  dropped = 0;

  constructor(
    private readonly random: () => number = Math.random,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Replaces all settings: a field left out is off, so `{}` clears every fault. */
  set(s: Partial<FaultSettings>): FaultSettings {
    this.settings = { ...NONE, ...s };
    this.dropped = 0;
    this.downUntil = this.settings.down_for_ms > 0 ? this.clock() + this.settings.down_for_ms : 0;
    return this.get();
  }

  /** The current settings; `down_for_ms` is the outage time still left. */
  get(): FaultSettings {
    return { ...this.settings, down_for_ms: Math.max(0, this.downUntil - this.clock()) };
  }

  /** Whether the router-facing API is in a simulated outage. */
  isDown(): boolean {
    return this.downUntil > this.clock();
  }

  /** Whether this copy of a ciphertext arrives corrupted. */
  corrupts(): boolean {
    if (this.settings.corrupt_next > 0) {
      this.settings.corrupt_next--;
      return true;
    }
    return this.settings.corrupt > 0 && this.random() < this.settings.corrupt;
  }

  /**
   * The delivery delays of one message's copies: `[]` when it is dropped, two entries when duplicated.
   * Without faults it is `[0]`, which the relay turns into delivery on the next tick.
   */
  plan(): number[] {
    const s = this.settings;
    if (s.drop > 0 && this.random() < s.drop) {
      this.dropped++;
      return [];
    }
    const copies = s.duplicate > 0 && this.random() < s.duplicate ? 2 : 1;
    const delays: number[] = [];
    for (let i = 0; i < copies; i++) {
      delays.push(s.delay_ms + (s.reorder ? Math.floor(this.random() * REORDER_WINDOW_MS) : 0));
    }
    return delays;
  }
}
