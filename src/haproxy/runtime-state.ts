/**
 * The live state HAProxy reports on its runtime API, parsed: `show servers state`, `show ssl
 * cert`, `show ssl ca-file`. PURE (text in, data out); the session that asks is src/driver/runtime-session.ts.
 */
import { HaproxyConnectError } from '../errors.js';

/** srv_op_state of `show servers state` (management.txt 9.3). */
export type ServerOpState = 'stopped' | 'starting' | 'running' | 'stopping';
const OP_STATES: readonly ServerOpState[] = ['stopped', 'starting', 'running', 'stopping'];
/** FMAINT | IMAINT | CMAINT | RMAINT: every reason a server is in maintenance. */
const MAINT_MASK = 0x01 | 0x02 | 0x04 | 0x20;

export interface LiveServer {
  backend: string;
  name: string;
  address: string;
  port: number;
  /** The weight in effect (srv_uweight). */
  weight: number;
  maintenance: boolean;
  /** Raw srv_admin_state bit mask. */
  adminState: number;
  opState: ServerOpState;
}

function cliError(what: string, text: string): never {
  throw new HaproxyConnectError('HAPROXY_CLI', `Unexpected ${what} answer: ${JSON.stringify(text.slice(0, 300))}`);
}

/** Command for the state of one backend, or of all when `backend` is undefined. */
export function showServersStateCommand(backend?: string): string {
  return backend === undefined ? 'show servers state' : `show servers state ${backend}`;
}

/**
 * Parses `show servers state` (format version 1). Columns are located through the `#` header
 * line, so extra columns of later versions do not matter.
 */
export function parseServersState(text: string): LiveServer[] {
  const lines = text.split('\n').filter((line) => line.trim() !== '');
  if (lines[0]?.trim() !== '1') cliError("'show servers state'", text);
  const header = lines[1];
  if (header === undefined || !header.startsWith('#')) cliError("'show servers state'", text);
  const columns = header.slice(1).trim().split(/\s+/);
  const col = (name: string): number => {
    const index = columns.indexOf(name);
    if (index < 0) cliError(`'show servers state' (no column ${name})`, text);
    return index;
  };
  const idx = {
    backend: col('be_name'),
    name: col('srv_name'),
    addr: col('srv_addr'),
    op: col('srv_op_state'),
    admin: col('srv_admin_state'),
    weight: col('srv_uweight'),
    port: col('srv_port'),
  };
  const servers: LiveServer[] = [];
  for (const line of lines.slice(2)) {
    if (line.startsWith('#')) continue;
    const f = line.trim().split(/\s+/);
    const field = (i: number): string => f[i] ?? cliError("'show servers state' line", line);
    const adminState = Number(field(idx.admin));
    const opState = OP_STATES[Number(field(idx.op))];
    if (opState === undefined || !Number.isInteger(adminState)) cliError("'show servers state' line", line);
    servers.push({
      backend: field(idx.backend),
      name: field(idx.name),
      address: field(idx.addr),
      port: Number(field(idx.port)),
      weight: Number(field(idx.weight)),
      maintenance: (adminState & MAINT_MASK) !== 0,
      adminState,
      opState,
    });
  }
  return servers;
}

export interface CertInfo {
  /** Upper-case hex, as HAProxy prints it. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** OpenSSL's ASN1_TIME print form, e.g. `Oct 30 23:48:40 2126 GMT`. */
function parseAsn1Time(value: string): Date {
  const m = /^(\w{3})\s+(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) (\d{4}) GMT$/.exec(value.trim());
  const month = m ? MONTHS.indexOf(m[1] as string) : -1;
  if (!m || month < 0) cliError('certificate date', value);
  return new Date(Date.UTC(Number(m[6]), month, Number(m[2]), Number(m[3]), Number(m[4]), Number(m[5])));
}

/** `Key: value` blocks; a new block starts at each `Serial:` line. */
function certBlocks(text: string): CertInfo[] {
  const certs: CertInfo[] = [];
  let current: Partial<CertInfo> | undefined;
  for (const line of text.split('\n')) {
    const m = /^(Serial|notBefore|notAfter):\s*(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, key, value] = m as unknown as [string, string, string];
    if (key === 'Serial') {
      current = { serial: value.trim() };
      certs.push(current as CertInfo);
    } else if (current !== undefined) {
      current[key as 'notBefore' | 'notAfter'] = parseAsn1Time(value);
    }
  }
  for (const cert of certs) {
    if (cert.notBefore === undefined || cert.notAfter === undefined) cliError('certificate block', text);
  }
  return certs;
}

/** Parses `show ssl cert <path>`: the certificate (first block) of a stored file. */
export function parseShowSslCert(text: string): CertInfo & { status: string | undefined } {
  const cert = certBlocks(text)[0];
  if (cert === undefined) cliError("'show ssl cert'", text);
  return { ...cert, status: /^Status:\s*(\S+)/m.exec(text)?.[1] };
}

/** Parses `show ssl ca-file <path>`: one entry per `Certificate #N` of the bundle. */
export function parseShowSslCaFile(text: string): { status: string | undefined; certificates: CertInfo[] } {
  if (!/^Filename:/m.test(text)) cliError("'show ssl ca-file'", text);
  return { status: /^Status:\s*(\S+)/m.exec(text)?.[1], certificates: certBlocks(text) };
}
