/**
 * re2js, loaded the first time a pattern is compiled: most sidecars never see a regex in a config
 * entry or an intention, and loading it costs about 1.5 MiB of RSS (measured on Node 20).
 */
import { createRequire } from 'node:module';
import type { RE2JS } from 're2js';

let loaded: typeof RE2JS | undefined;

export function re2(): typeof RE2JS {
  loaded ??= (createRequire(import.meta.url)('re2js') as typeof import('re2js')).RE2JS;
  return loaded;
}
