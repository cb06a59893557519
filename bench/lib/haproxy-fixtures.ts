/**
 * HAProxy configurations the benchmark writes itself: the backend app (HAProxy answering a fixed
 * response) and the hand-written two-hop mTLS reference chain, with ECDSA P-256 certificates made by
 * the openssl CLI. Configuration builders are pure; `writeCertificates` and `checkConfig` do I/O.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HAPROXY_BIN } from '../../devtools/haproxy-bin.js';

export { HAPROXY_BIN };
/** The generators open at most a few hundred connections; HAProxy needs about 2 FDs per connection
 * and refuses to start when it cannot raise its FD limit that far (here the hard limit is 20,000). */
const MAXCONN = 5_000;

const GLOBAL_AND_DEFAULTS = (mode: 'http' | 'tcp'): string[] => [
  'global',
  `  maxconn ${MAXCONN}`,
  '  ssl-default-bind-options ssl-min-ver TLSv1.2',
  '  ssl-default-server-options ssl-min-ver TLSv1.2',
  'defaults',
  `  mode ${mode}`,
  '  timeout connect 5s',
  '  timeout client 60s',
  '  timeout server 60s',
];

/** The backend app: HAProxy itself returns `200 <body>`, no backend, no files. */
export function appConfig(port: number, body: string): string {
  if (!/^[\w.-]+$/.test(body)) throw new Error(`app body must be a plain word, got '${body}'`);
  return [...GLOBAL_AND_DEFAULTS('http'), 'frontend app', `  bind 127.0.0.1:${port}`, `  http-request return status 200 content-type text/plain string ${body}`, ''].join('\n');
}

export interface ReferencePorts {
  /** Plain listener of hop A (the client's entry). */
  entry: number;
  /** mTLS listener of hop B. */
  mtls: number;
  app: number;
}

export interface ReferenceCerts {
  caFile: string;
  serverPem: string;
  clientPem: string;
}

/** Hop A: plain in, mutual TLS out, `http-reuse always` in HTTP mode (the best setting, FACTS §3). */
export function referenceHopA(mode: 'http' | 'tcp', ports: ReferencePorts, certs: ReferenceCerts): string {
  return [
    ...GLOBAL_AND_DEFAULTS(mode),
    'frontend hop_a',
    `  bind 127.0.0.1:${ports.entry}`,
    '  default_backend to_hop_b',
    'backend to_hop_b',
    ...(mode === 'http' ? ['  http-reuse always'] : []),
    `  server hop_b 127.0.0.1:${ports.mtls} ssl crt ${certs.clientPem} ca-file ${certs.caFile} verify required`,
    '',
  ].join('\n');
}

/** Hop B: mutual TLS in (client certificate required), plain out to the app. */
export function referenceHopB(mode: 'http' | 'tcp', ports: ReferencePorts, certs: ReferenceCerts): string {
  return [
    ...GLOBAL_AND_DEFAULTS(mode),
    'frontend hop_b',
    `  bind 127.0.0.1:${ports.mtls} ssl crt ${certs.serverPem} ca-file ${certs.caFile} verify required`,
    '  default_backend app',
    'backend app',
    `  server app 127.0.0.1:${ports.app}`,
    '',
  ].join('\n');
}

/** A CA and two leaves, all ECDSA P-256 (Consul's default key type), written into `dir`. */
export function writeCertificates(dir: string): ReferenceCerts {
  const openssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key');
  openssl('req', '-x509', '-new', '-key', 'ca.key', '-subj', '/CN=bench CA', '-days', '2', '-out', 'ca.pem');
  const leaf = (name: string): string => {
    openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`);
    openssl('req', '-new', '-key', `${name}.key`, '-subj', `/CN=${name}`, '-out', `${name}.csr`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-out', `${name}.crt`);
    const pem = join(dir, `${name}.pem`);
    writeFileSync(pem, readFileSync(join(dir, `${name}.crt`), 'utf8') + readFileSync(join(dir, `${name}.key`), 'utf8'), { mode: 0o600 });
    return pem;
  };
  return { caFile: join(dir, 'ca.pem'), serverPem: leaf('server'), clientPem: leaf('client') };
}

/** `haproxy -c`, so a bad fixture fails with HAProxy's own message instead of a dead port. */
export function checkConfig(file: string): void {
  try {
    execFileSync(HAPROXY_BIN, ['-c', '-q', '-f', file], { stdio: 'pipe' });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`haproxy -c rejected ${file}: ${stderr || (err as Error).message}`);
  }
}
