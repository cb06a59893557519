/**
 * The logs part: the receiver of HAProxy's logs (a unix datagram socket HAProxy's log ring sends
 * to) and the access log writer it feeds. Both listen before HAProxy starts, and stop after it, so
 * the last lines of draining workers are still received.
 */
import { join } from 'node:path';
import { errorMessage, isHaproxyConnectError } from '../errors.js';
import { LOG_SOCKET_FILE } from '../domain/haproxy-names.js';
import type { AccessLogs } from '../domain/snapshot.js';
import type { Logger } from '../logger.js';
import { AccessLogWriter } from '../telemetry/access-log-writer.js';
import type { AccessRecord } from '../telemetry/access-log-record.js';
import { HaproxyLogReceiver } from '../telemetry/haproxy-logs.js';

export interface LogsPart {
  /** New access log settings from a registration change (errors are logged; the old ones stay). */
  configure(settings: AccessLogs | undefined): void;
  stop(): Promise<void>;
}

/** An access log file that cannot be opened is a start error naming the path. */
export async function startLogs(
  runDir: string,
  settings: AccessLogs | undefined,
  logger: { main: Logger; haproxy: Logger },
  /** Also sees every access record (the Envoy-compatible latency histograms of -stats-addr). */
  onAccess?: (record: AccessRecord) => void,
): Promise<LogsPart> {
  const accessLogLog = logger.main.child({ component: 'access-log' });
  const accessLog = new AccessLogWriter({ logger: accessLogLog });
  let receiver: HaproxyLogReceiver;
  try {
    await accessLog.configure(settings);
    receiver = await HaproxyLogReceiver.listen({
      socketPath: join(runDir, LOG_SOCKET_FILE),
      logger: logger.haproxy,
      onAccess: (record) => {
        accessLog.write(record);
        onAccess?.(record);
      },
    });
  } catch (err) {
    await accessLog.close();
    throw err;
  }
  return {
    configure: (next) => {
      accessLog
        .configure(next)
        .catch((err: unknown) =>
          accessLogLog.error({ err: errorMessage(err), code: isHaproxyConnectError(err) ? err.code : undefined }, 'cannot apply the new access log settings; keeping the previous ones'),
        );
    },
    stop: async () => {
      await receiver.close();
      await accessLog.close();
      logger.haproxy.debug({ ...receiver.stats, accessLog: accessLog.stats }, 'log receiver stopped');
    },
  };
}
