/**
 * The intentions part (when enforced): the authorizer and the SPOE agent HAProxy asks for a verdict
 * on each new connection. The agent listens before HAProxy starts, so the first connection already
 * gets one. Intentions and the trust domain reach the authorizer before the reconciler moves
 * HAProxy's epoch; open connections from sources a change denies are closed on the runtime API.
 */
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { uriSansOf } from '../spiffe/san.js';
import { errorMessage, isHaproxyConnectError } from '../errors.js';
import { PUBLIC_FRONTEND_NAME, SPOE_AGENT_SOCKET_FILE } from '../domain/haproxy-names.js';
import type { IntentionSet } from '../domain/intentions.js';
import type { SnapshotEvent } from '../domain/snapshot.js';
import { closeSessionsFrom } from '../driver/sessions.js';
import { Authorizer, type RevokedConnection } from '../intentions/authorizer.js';
import { describeIntention } from '../intentions/evaluate.js';
import type { Logger } from '../logger.js';
import { SpoeAgent } from '../spoe/agent.js';
import type { SidecarMetrics } from '../telemetry/metrics.js';

export interface IntentionsPart {
  /** Applies an intentions, leaf or roots event (other events are ignored). */
  observe(event: SnapshotEvent): void;
  /** Denies every caller until the intentions of the service the proxy now fronts arrive. */
  denyAll(): void;
  readonly spoeStats: () => SpoeAgent['stats'];
  /** Waits for the closing of revoked connections in flight (before HAProxy stops: it needs the runtime API). */
  settle(): Promise<void>;
  /** Closes the agent (after HAProxy stopped: no more verdicts are asked for). */
  stop(): Promise<void>;
}

export interface IntentionsOptions {
  runDir: string;
  adminSocket: string;
  intentions: IntentionSet;
  trustDomain: string;
  /** Our leaf: its URI SAN is the `By` of X-Forwarded-Client-Cert. */
  leafCertPem: string;
  logger: Logger;
  onDecision?: SidecarMetrics['intentionDecided'];
}

export async function startIntentions(options: IntentionsOptions): Promise<IntentionsPart> {
  const { logger: log, adminSocket } = options;
  const authorizer = new Authorizer({ logger: log, ...(options.onDecision !== undefined && { onDecision: options.onDecision }) });
  authorizer.update({ intentions: options.intentions, trustDomain: options.trustDomain, localSpiffeUri: localUriOf(options.leafCertPem, log) });
  const reportUnenforceable = unenforceableReporter(log);
  reportUnenforceable(options.intentions);
  const agent = await SpoeAgent.listen({ socketPath: join(options.runDir, SPOE_AGENT_SOCKET_FILE), handle: authorizer.handle, logger: log });
  log.info({ intentions: options.intentions.intentions.length, defaultAllow: options.intentions.defaultAllow }, 'intentions enforced');
  const closing = new Set<Promise<void>>();
  const revoke = (revoked: readonly RevokedConnection[]): void => {
    if (revoked.length === 0) return;
    const done = closeRevoked(adminSocket, revoked, log).finally(() => closing.delete(done));
    closing.add(done);
  };
  return {
    observe: (event) => {
      if (event.kind === 'intentions') {
        const revoked = authorizer.update({ intentions: event.value });
        reportUnenforceable(event.value);
        log.info(
          { intentions: event.value.intentions.length, defaultAllow: event.value.defaultAllow, l7Policies: authorizer.policies.size, revoked: revoked.length, ...authorizer.stats },
          'intentions changed',
        );
        revoke(revoked);
      } else if (event.kind === 'leaf') {
        authorizer.update({ localSpiffeUri: localUriOf(event.value.certPem, log) });
      } else if (event.kind === 'roots') {
        revoke(authorizer.update({ trustDomain: event.value.trustDomain }));
      }
    },
    denyAll: () => revoke(authorizer.update({ intentions: { intentions: [], defaultAllow: false } })),
    spoeStats: () => agent.stats,
    settle: async () => {
      await Promise.all(closing);
    },
    stop: async () => {
      await Promise.all(closing);
      await agent.close().catch((err: unknown) => log.error({ err: errorMessage(err) }, 'closing the SPOE agent failed'));
      log.info({ ...authorizer.stats, ...agent.stats }, 'intentions agent stopped');
    },
  };
}

/** The first URI SAN of our leaf ('' if none can be read: X-Forwarded-Client-Cert then has no By, as in Envoy). */
function localUriOf(certPem: string, log: Logger): string {
  try {
    return uriSansOf(new X509Certificate(certPem))[0] ?? '';
  } catch (err) {
    log.warn({ err: errorMessage(err) }, 'cannot read the URI SAN of our leaf');
    return '';
  }
}

/**
 * Logs each intention that cannot be enforced as written (it denies), once while it stays so: one
 * `error` line naming the intention and the reason, as Envoy would refuse the policy.
 */
function unenforceableReporter(log: Logger): (set: IntentionSet) => void {
  let reported = new Set<string>();
  return (set) => {
    const now = new Set<string>();
    for (const intention of set.intentions) {
      if (intention.unenforceable === undefined) continue;
      const line = `${describeIntention(intention)}: ${intention.unenforceable}`;
      now.add(line);
      if (!reported.has(line)) log.error({ intention: describeIntention(intention), reason: intention.unenforceable }, 'intention cannot be enforced: it denies every source it matches');
    }
    reported = now;
  };
}

/** Closes the open connections of sources a new intention denies (best effort: logged, never thrown). */
async function closeRevoked(adminSocket: string, revoked: readonly RevokedConnection[], log: Logger): Promise<void> {
  try {
    const closed = await closeSessionsFrom(adminSocket, PUBLIC_FRONTEND_NAME, new Set(revoked.map((r) => r.source)));
    log.info({ revoked: revoked.length, closed, services: [...new Set(revoked.map((r) => r.identity.service))] }, 'closed connections that intentions no longer allow');
  } catch (err) {
    log.error({ err: errorMessage(err), code: isHaproxyConnectError(err) ? err.code : undefined }, 'cannot close connections that intentions no longer allow');
  }
}
