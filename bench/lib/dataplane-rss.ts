/**
 * RSS of the Data Plane API processes the sidecars under test start (`-dataplane`), sampled while a
 * control-plane case runs: each sidecar's daemon spawns its API as a child, so the APIs of this
 * run are the descendants of this process whose command line is `<DATAPLANEAPI_BIN> -f
 * <run dir>/dataplaneapi.yaml`. Restricting to descendants keeps out the APIs of anything else on
 * the machine (an integration suite using the same binary). A daemon restarts its API once after
 * HAProxy first starts, so processes are grouped by their configuration file: one per sidecar.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { descendants } from '../../devtools/proc.js';
import { DATAPLANE_CONFIG_FILE } from '../../src/dataplane/api-config.js';
import type { DataplaneApiRss } from '../control-plane/case.js';
import { rssKiB } from './proc-stats.js';

/** Between two samples: cheap (one /proc scan) and short next to a case's seconds. */
const SAMPLE_INTERVAL_MS = 500;

/**
 * The configuration file of a Data Plane API started from `bin`, read from a NUL-separated
 * /proc/<pid>/cmdline; undefined for any other process. Pure.
 */
export function dataplaneConfigOf(cmdline: string, bin: string): string | undefined {
  const argv = cmdline.split('\0');
  if (argv[0] !== bin) return undefined;
  const flag = argv.indexOf('-f');
  const config = flag < 0 ? undefined : argv[flag + 1];
  return config !== undefined && basename(config) === DATAPLANE_CONFIG_FILE ? config : undefined;
}

/** Highest RSS per sidecar (KiB, by configuration file) summed up in MiB; undefined when none was seen. Pure. */
export function summarizePeaks(peaksKiB: ReadonlyMap<string, number>): DataplaneApiRss | undefined {
  const peaks = [...peaksKiB.values()];
  if (peaks.length === 0) return undefined;
  return { sidecars: peaks.length, maxMiB: Math.max(...peaks) / 1024, meanPeakMiB: peaks.reduce((a, b) => a + b, 0) / peaks.length / 1024 };
}

function cmdlineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return ''; // exited between listing and reading
  }
}

/** Samples the Data Plane APIs below this process every SAMPLE_INTERVAL_MS until `stop`; `peaks` sums up what it saw. */
export function sampleDataplaneRss(bin: string): { stop(): void; peaks(): DataplaneApiRss | undefined } {
  const peaks = new Map<string, number>();
  const sample = (): void => {
    for (const pid of descendants(process.pid)) {
      const config = dataplaneConfigOf(cmdlineOf(pid), bin);
      if (config === undefined) continue;
      const kib = rssKiB(pid);
      if (kib > (peaks.get(config) ?? 0)) peaks.set(config, kib);
    }
  };
  const timer = setInterval(sample, SAMPLE_INTERVAL_MS);
  return {
    stop: () => clearInterval(timer),
    peaks: () => summarizePeaks(peaks),
  };
}
