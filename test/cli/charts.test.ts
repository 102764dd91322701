import { describe, expect, it } from 'vitest';
import { latencyChart, scalingChart } from '../../bench/charts.ts';

describe('bench charts', () => {
  it('draws one latency line per series, ordered by quantile, with p50 and p99 in the legend', () => {
    const svg = latencyChart([
      { label: 'fast', quantiles: { p0: 2, p50: 10, p99: 30, p100: 40 } },
      { label: 'slow <&>', quantiles: { p100: 900, p0: 50, p50: 200, p99: 800 } },
    ]);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.endsWith('</svg>')).toBe(true);
    const paths = [...svg.matchAll(/<path d="([^"]+)"/g)].map((m) => m[1]!.split(' ').map((p) => p.slice(1).split(',').map(Number)));
    expect(paths).toHaveLength(2);
    // Within a line, higher quantiles sit higher (smaller y) and further right (larger x).
    for (const pts of paths) {
      for (let i = 1; i < pts.length; i++) {
        expect(pts[i]![0]).toBeGreaterThanOrEqual(pts[i - 1]![0]!);
        expect(pts[i]![1]).toBeLessThan(pts[i - 1]![1]!);
      }
    }
    // The slower series is to the right at its median.
    expect(paths[1]![2]![0]).toBeGreaterThan(paths[0]![2]![0]!);
    expect(svg).toContain('p50 10 ms, p99 30 ms');
    expect(svg).toContain('slow &lt;&amp;&gt;');
    expect(svg).not.toContain('<script');
  });

  it('draws a throughput bar and a stacked CPU bar per worker count', () => {
    const svg = scalingChart([
      { workers: 1, msgsPerS: 500, cpuMs: { workers: 1.7, Redis: 0.5 } },
      { workers: 2, msgsPerS: 400, cpuMs: { workers: 2.6, Redis: 0.7 } },
    ]);
    const bars = [...svg.matchAll(/<rect x="([\d.-]+)" y="([\d.-]+)" width="([\d.]+)" height="([\d.]+)" fill="#/g)]
      .filter((m) => m[3] !== '12').map((m) => ({ y: Number(m[2]), height: Number(m[4]) }));
    // Two throughput bars and two stacks of two: six bars, the first taller than the second (500 > 400).
    expect(bars).toHaveLength(6);
    expect(bars[0]!.height).toBeGreaterThan(bars[1]!.height);
    // Every bar inside the plot: the axis reaches past the largest value.
    for (const b of bars) expect(b.y).toBeGreaterThanOrEqual(60);
    expect(svg).toContain('>500<');
    expect(svg).toContain('>2.2<');
    expect(svg).toContain('>3.3<');
  });
});
