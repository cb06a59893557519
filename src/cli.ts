#!/usr/bin/env -S node --max-semi-space-size=1
/**
 * The command line: flags + environment → config → run(). Exits in one place:
 * 0 after a clean shutdown, 2 for invalid flags or environment, 1 when the sidecar cannot run.
 * A first SIGINT/SIGTERM shuts down in order; a second one exits at once.
 */
import { FLAGS, loadConfig } from './config/config.js';
import { formatHelp } from './config/flags.js';
import { errorMessage, isHaproxyConnectError } from './errors.js';
import { run } from './main.js';
import { createLogger } from './logger.js';
import { VERSION } from './version.js';

const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

async function main(argv: string[]): Promise<number> {
  let request: Awaited<ReturnType<typeof loadConfig>>;
  try {
    request = await loadConfig({ argv, env: process.env });
  } catch (err) {
    process.stderr.write(`haproxy-connect: ${errorMessage(err)}\n`);
    return isHaproxyConnectError(err, 'CONFIG_INVALID') ? EXIT_USAGE : EXIT_FAILURE;
  }
  if (request.kind === 'help') {
    process.stdout.write(`${formatHelp('haproxy-connect', FLAGS)}\n`);
    return EXIT_OK;
  }
  if (request.kind === 'version') {
    process.stdout.write(`haproxy-connect ${VERSION}\n`);
    return EXIT_OK;
  }
  const logger = createLogger(request.config.logLevel, undefined, request.config.logFormat);
  const shutdown = new AbortController();
  let signals = 0;
  const onSignal = (name: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal: name }, 'second signal: exiting at once');
      process.exit(EXIT_FAILURE);
    }
    shutdown.abort(new Error(`received ${name}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await run(request.config, shutdown.signal, { logger });
    return EXIT_OK;
  } catch (err) {
    const code = isHaproxyConnectError(err) ? err.code : undefined;
    logger.fatal({ err: errorMessage(err), code }, 'haproxy-connect cannot run');
    process.stderr.write(`haproxy-connect: ${errorMessage(err)}\n`);
    return EXIT_FAILURE;
  }
}

// Exit explicitly: pooled keep-alive sockets to the agent must not hold the process open.
process.exit(await main(process.argv.slice(2)));
