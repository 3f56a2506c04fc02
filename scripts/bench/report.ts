/**
 * Markdown tables of the results: medians per broker, the ratio ours ÷ Mosquitto (with the range
 * of the per-round ratios), and the correctness counts.
 *
 * @module
 */
import { median, type RunResult } from "./core.ts";
import type { Scenario } from "./scenarios.ts";

/** Results of one scenario on one broker: one entry per round (an Error when the run failed). */
export type Runs = Map<string, (RunResult | Error)[]>;

/** All results, by scenario name then broker name. */
export type Results = Map<string, Runs>;

function fmt(value: number, digits = 0): string {
  if (!Number.isFinite(value)) return "–";
  return value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** Ratio of the medians, with the range of the per-round ratios when there are several. */
function ratioText(mine: number[], base: number[]): string {
  const m = median(mine) / median(base);
  if (!Number.isFinite(m)) return "–";
  const digits = m >= 10 ? 1 : 2;
  // Per-round ratios pair the runs made next to each other in time.
  const paired = mine.map((v, i) => v / base[i]).filter((v) => Number.isFinite(v));
  if (paired.length < 2) return fmt(m, digits);
  return `${fmt(m, digits)} (${fmt(Math.min(...paired), digits)}–${
    fmt(Math.max(...paired), digits)
  })`;
}

/** The figure table. `baseline` names the broker that ratios divide by. */
export function figureTable(
  scenarios: readonly Scenario[],
  results: Results,
  brokers: string[],
  baseline: string | undefined,
): string {
  const others = baseline ? brokers.filter((b) => b !== baseline) : [];
  const shown = brokers.filter((b) => [...results.values()].some((r) => r.has(b)));
  const ratioCols = others.filter((b) => shown.includes(b));
  const head = ["scenario", "figure", ...shown, ...ratioCols.map((b) => `${b} ÷ ${baseline}`)];
  const lines = [
    `| ${head.join(" | ")} |`,
    `|${head.map((_, i) => i < 2 ? "---" : "--:").join("|")}|`,
  ];
  for (const sc of scenarios) {
    const runs = results.get(sc.name);
    if (!runs) continue;
    const first = [...runs.values()].flat().find((r): r is RunResult => !(r instanceof Error));
    if (!first) {
      lines.push(`| ${sc.name} | (every run failed) |${shown.map(() => " |").join("")}`);
      continue;
    }
    for (const fig of first.figures) {
      const perBroker = new Map<string, number[]>();
      for (const b of shown) {
        perBroker.set(
          b,
          (runs.get(b) ?? []).map((r) =>
            r instanceof Error ? NaN : r.figures.find((f) => f.name === fig.name)?.value ?? NaN
          ),
        );
      }
      const arrow = fig.better === "higher" ? "↑" : "↓";
      const cells = shown.map((b) => {
        const vals = perBroker.get(b)!;
        return vals.length ? fmt(median(vals), fig.digits ?? 0) : "";
      });
      const ratios = ratioCols.map((b) => {
        const mine = perBroker.get(b)!;
        const base = perBroker.get(baseline!) ?? [];
        if (mine.length === 0 || base.length === 0) return "";
        return ratioText(mine, base);
      });
      lines.push(`| ${sc.name} | ${fig.name} ${arrow} | ${[...cells, ...ratios].join(" | ")} |`);
    }
  }
  return lines.join("\n");
}

/** Lost / duplicated / misrouted totals per scenario and broker, plus failures and notes. */
export function countsTable(scenarios: readonly Scenario[], results: Results): string {
  const lines = [
    "| scenario | broker | runs | lost | duplicated | misrouted | timed out / failed | notes |",
    "|---|---|--:|--:|--:|--:|--:|---|",
  ];
  for (const sc of scenarios) {
    const runs = results.get(sc.name);
    if (!runs) continue;
    for (const [broker, list] of runs) {
      let lost = 0, dup = 0, mis = 0, bad = 0;
      const notes = new Set<string>();
      for (const r of list) {
        if (r instanceof Error) {
          bad++;
          notes.add(r.message.split("\n")[0]);
          continue;
        }
        lost += r.counts.lost;
        dup += r.counts.duplicated;
        mis += r.counts.misrouted;
        if (r.timedOut) bad++;
        for (const n of r.notes) notes.add(n);
      }
      lines.push(
        `| ${sc.name} | ${broker} | ${list.length} | ${lost} | ${dup} | ${mis} | ${bad} | ${
          [...notes].join("; ").replaceAll("|", "/")
        } |`,
      );
    }
  }
  return lines.join("\n");
}
