/**
 * The Data Plane API driver: the same plan as the native driver, applied through the HAProxy Data
 * Plane API (v2, the 2.9 line for HAProxy 2.6):
 * - structure: the whole rendered configuration through `configuration/raw` with its version
 *   (the API checks it with `haproxy -c`, writes it, and reloads with `force_reload`);
 * - endpoints: `configuration/servers` for address, port and weight (which the API changes
 *   through the runtime API without a reload), `runtime/servers` for maintenance, with spare slots
 *   for new endpoints;
 * - certificates: `storage/ssl_certificates` (the leaf and the CA bundle in the run directory);
 * - the intentions epoch and split weights: `runtime/maps_entries`.
 * HAProxy itself stays under our supervisor (master-worker); the API's reload command signals its
 * master, and the new worker is confirmed from the master CLI as with the native driver.
 *
 * What the API cannot do at runtime costs a reload, and says so (`runtimeLimits`). Measured on
 * v2.9.27: `POST runtime/servers` writes only the first option it finds (its serializer is a
 * `switch` with one case taken), so an mTLS server cannot be added with its `ssl crt ca-file
 * verify` options: new endpoints take spare slots instead (slots.ts), as the original tool did.
 * There is no runtime endpoint for certificates: a new leaf is stored through the API, then loaded
 * through HAProxy's own runtime API (`set ssl cert`, `commit ssl cert`), the one change that does
 * not go through the API: a reload per leaf rotation cuts keep-alive requests.
 */
import { basename, join } from 'node:path';
import { chmod, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { HaproxyConnectError, errorMessage, isHaproxyConnectError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ActivateOutcome, DriverState, HaproxyDriver, LiveState } from '../driver/driver.js';
import type { ManagedFiles } from '../driver/files.js';
import type { HaproxyProcess } from '../driver/process.js';
import type { OpResult } from '../driver/runtime-apply.js';
import type { HaproxyModel, ModelFile, Server } from '../haproxy/model.js';
import type { LiveServer } from '../haproxy/runtime-state.js';
import type { RuntimeOp } from '../haproxy/runtime-ops.js';
import { ADMIN_SOCKET_FILE, INTENTIONS_EPOCH_CURRENT_KEY, LEAF_FILE, ROOTS_FILE } from '../domain/haproxy-names.js';
import { HAPROXY_MASTER_PID_FILE } from './api-config.js';
import { applyOps } from '../driver/runtime-apply.js';
import { RuntimeSession } from '../driver/runtime-session.js';
import { parseShowSslCert } from '../haproxy/runtime-state.js';
import { render } from '../haproxy/render.js';
import { type ServerValues, type SlotLayout, endpointNameOf, freeSlots, freshLayout, slotOf, slottedModel, withHolder } from './slots.js';
import type { DataplaneApiProcess } from './api-process.js';

/** What the driver needs of the API's process (src/dataplane/api-process.ts). */
export type DataplaneApi = Pick<DataplaneApiProcess, 'state' | 'client' | 'start' | 'ready' | 'restart' | 'startedBeforeHaproxy'>;
import type { DataplaneAnswer, DataplaneClient, DataplaneRequest } from './client.js';

/**
 * Files that go through the API's storage, by the storage that takes them; the rest of the run
 * directory's files are written as by the native driver. The CA bundle goes to general storage:
 * certificate storage refuses a file without a private key (measured on v2.9.27).
 */
const STORED_FILES: ReadonlyMap<string, string> = new Map([
  [LEAF_FILE, '/services/haproxy/storage/ssl_certificates'],
  [ROOTS_FILE, '/services/haproxy/storage/general'],
]);
/** Runtime writes are persisted to the configuration file after this much quiet (no reload). */
const PERSIST_QUIET_MS = 1_000;
/**
 * Above this many server changes in one batch, a reload: each change through `configuration/servers`
 * writes (and syncs) the API's whole file, so 1,000 weight changes on a 1,000-server backend took
 * longer than 120 s (bench, endpoint-scale), where one reload takes about a second.
 */
export const MAX_SERVER_EDITS = 32;

/** What the driver needs of the HAProxy supervisor (src/driver/process.ts). */
export type SupervisedHaproxy = Pick<HaproxyProcess, 'state' | 'pid' | 'start' | 'reload'>;

/** A session on HAProxy's own runtime API, for what the Data Plane API v2.9 has no endpoint for. */
export type OpenHaproxyRuntime = (signal?: AbortSignal) => Promise<RuntimeSession>;

export interface DataplaneDriverOptions {
  haproxy: SupervisedHaproxy;
  api: DataplaneApi;
  files: ManagedFiles;
  runDir: string;
  logger: Logger;
  /** Default: the admin socket in the run directory. */
  openHaproxyRuntime?: OpenHaproxyRuntime;
}

/** The reasons why `ops` cannot all be applied at runtime with `layout`'s free slots (one line per reason). */
export function runtimeLimits(ops: readonly RuntimeOp[], layout: SlotLayout): string[] {
  const reasons = new Set<string>();
  const free = new Map<string, number>();
  for (const op of ops) {
    if (op.kind !== 'add-server') continue;
    // POST runtime/servers writes only one option of a server on v2.9.27 (measured): new
    // endpoints go into spare slots written with the backend's TLS options.
    const left = free.get(op.backend) ?? freeSlots(layout, op.backend).length;
    if (left <= 0) reasons.add(`add-server: no free server slot left in backend ${op.backend} (a reload makes new ones)`);
    free.set(op.backend, left - 1);
  }
  const edits = ops.filter((op) => op.kind === 'add-server' || op.kind === 'set-address' || op.kind === 'set-weight').length;
  if (edits > MAX_SERVER_EDITS) {
    reasons.add(`${edits} server changes: each writes the Data Plane API's whole configuration file, one reload is faster above ${MAX_SERVER_EDITS}`);
  }
  return [...reasons];
}

export class DataplaneDriver implements HaproxyDriver {
  readonly name = 'dataplane';
  readonly #haproxy: SupervisedHaproxy;
  readonly #api: DataplaneApi;
  readonly #files: ManagedFiles;
  readonly #runDir: string;
  readonly #log: Logger;
  readonly #openRuntime: OpenHaproxyRuntime;
  /** What storage holds, by file name, so an unchanged certificate is not sent again. */
  readonly #stored = new Map<string, string>();
  /** The configuration text the API last accepted. */
  #posted: string | undefined;
  #persistTimer: NodeJS.Timeout | undefined;
  /** The model to save once quiet: rendered when saved, with the slot layout of that moment. */
  #persistQueued: HaproxyModel | undefined;
  #persisting: Promise<void> | undefined;
  /**
   * Requests that change the API's configuration run one at a time: each reads the version it
   * writes against, and a queued save between a read and its write would fail it (409).
   */
  #writing: Promise<unknown> = Promise.resolve();
  /** Which endpoint each spare slot holds, as HAProxy runs it. */
  #layout: SlotLayout = new Map();
  /**
   * Address, port and weight of every server of the slotted backends as HAProxy holds them. The
   * API changes at runtime only what differs from its file, so every save writes these (a freed
   * slot keeps its last holder's values), never a placeholder HAProxy does not hold.
   */
  #values = new Map<string, ServerValues>();
  readonly #held = (backend: string, server: string): ServerValues | undefined => this.#values.get(valuesKey(backend, server));

  constructor(opts: DataplaneDriverOptions) {
    this.#haproxy = opts.haproxy;
    this.#api = opts.api;
    this.#files = opts.files;
    this.#runDir = opts.runDir;
    this.#log = opts.logger;
    this.#openRuntime = opts.openHaproxyRuntime ?? ((signal) => RuntimeSession.open(join(opts.runDir, ADMIN_SOCKET_FILE), signal === undefined ? {} : { signal }));
  }

  get state(): DriverState {
    const state = this.#haproxy.state;
    return state === 'running' || state === 'stopped' ? state : 'unavailable';
  }

  get detail(): string {
    return `${this.#haproxy.state}, Data Plane API ${this.#api.state}`;
  }

  /** Runs `fn` after every change started before it. */
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#writing.then(fn, fn);
    this.#writing = run.catch(() => undefined);
    return run;
  }

  runtimeLimits(ops: readonly RuntimeOp[]): string[] {
    return runtimeLimits(ops, this.#layout);
  }

  /** `_text` (the reconcile loop's rendering) is not used: HAProxy runs the model with its spare slots. */
  async activate(model: HaproxyModel, _text: string, signal: AbortSignal): Promise<ActivateOutcome> {
    this.#cancelPersist();
    await this.#persisting;
    return this.#exclusive(() => this.#activateNow(model, signal));
  }

  async #activateNow(model: HaproxyModel, signal: AbortSignal): Promise<ActivateOutcome> {
    if (this.#api.state === 'stopped') await this.#api.start();
    await this.#api.ready(signal);
    await this.#writeFiles(model, signal);
    // A reload or start places every endpoint under its own name, with every slot free again.
    const layout = freshLayout(model);
    const slotted = slottedModel(model, layout);
    const text = render(slotted);
    // The layout is the one of the file as soon as the API took it: whatever fails after that
    // (the start, the reload), HAProxy runs this file next.
    const post = async (options: Record<string, string>): Promise<void> => {
      await this.#postConfig(text, options, signal);
      this.#layout = layout;
      this.#values = new Map(
        slotted.backends.filter((b) => layout.has(b.name)).flatMap((b) => b.servers.map((s) => [valuesKey(b.name, s.name), { address: s.address, port: s.port, weight: s.weight }] as const)),
      );
    };
    switch (this.#haproxy.state) {
      case 'stopped':
        await post({ skip_reload: 'true' });
        await this.#haproxy.start();
        // The API sets up its runtime client from the configuration it read at its own start, and
        // again only on a reload it runs: restarted, it finds the stats socket just written.
        if (this.#api.startedBeforeHaproxy) {
          await this.#api.restart(signal);
          await this.#api.client.expect({ method: 'GET', path: '/services/haproxy/runtime/info' }, [200], "reach HAProxy's runtime API", signal);
        }
        return 'started';
      case 'running': {
        const pid = this.#haproxy.pid;
        if (pid === undefined) throw new HaproxyConnectError('HAPROXY_RELOAD_FAILED', 'Cannot reload haproxy: its master pid is unknown');
        const pidFile = join(this.#runDir, HAPROXY_MASTER_PID_FILE);
        await writeFile(pidFile, `${pid}\n`, { mode: 0o600 }).catch((err: unknown) => {
          throw new HaproxyConnectError('FILE_WRITE_FAILED', `Cannot write ${pidFile}: ${errorMessage(err)}`, { cause: err });
        });
        // The pid file exists only while we reload: a reload the API schedules on its own (its
        // reload_delay after some calls, whatever skip_reload says) finds no master to signal, so
        // HAProxy never reloads from a file the reconcile loop did not ask for.
        try {
          await this.#haproxy.reload(() => post({ force_reload: 'true' }));
        } finally {
          await rm(pidFile, { force: true });
        }
        return 'reloaded';
      }
      default:
        await post({ skip_reload: 'true' });
        return 'deferred';
    }
  }

  applyRuntime(ops: readonly RuntimeOp[], signal: AbortSignal): Promise<OpResult[]> {
    return this.#exclusive(() => this.#applyRuntimeNow(ops, signal));
  }

  async #applyRuntimeNow(ops: readonly RuntimeOp[], signal: AbortSignal): Promise<OpResult[]> {
    const results: OpResult[] = [];
    for (const op of ops) {
      try {
        const limit = runtimeLimits([op], this.#layout)[0];
        if (limit !== undefined) throw new HaproxyConnectError('DATAPLANE_API', limit);
        await this.#api.ready(signal);
        results.push({ op, status: await this.#applyOne(op, signal), error: undefined });
      } catch (err) {
        const error = isHaproxyConnectError(err) ? err : new HaproxyConnectError('DATAPLANE_API', errorMessage(err), { cause: err });
        results.push({ op, status: 'failed', error });
      }
    }
    return results;
  }

  persist(model: HaproxyModel, _text: string): void {
    this.#persistQueued = model;
    clearTimeout(this.#persistTimer);
    this.#persistTimer = setTimeout(() => this.#startPersist(), PERSIST_QUIET_MS);
  }

  async restore(model: HaproxyModel, _text: string): Promise<void> {
    this.#cancelPersist();
    await this.#persisting;
    await this.#exclusive(() => this.#save(model));
  }

  /** Writes `model` as HAProxy holds it (its slots, the values freed slots keep) into the API's file, without a reload. */
  async #save(model: HaproxyModel): Promise<void> {
    await this.#api.ready();
    await this.#writeFiles(model);
    await this.#postConfig(render(slottedModel(model, this.#layout, this.#held)), { skip_reload: 'true' });
  }

  async readLive(applied: HaproxyModel, signal: AbortSignal): Promise<LiveState> {
    await this.#api.ready(signal);
    const client = this.#api.client;
    const servers: LiveServer[] = [];
    for (const backend of applied.backends.filter((b) => b.tls !== undefined)) {
      const answer = await client.expect({ method: 'GET', path: '/services/haproxy/runtime/servers', query: { backend: backend.name } }, [200], `list the servers of backend ${backend.name}`, signal);
      const weights = new Map(backend.servers.map((s) => [s.name, s.weight]));
      for (const s of parseRuntimeServers(answer.body, backend.name)) {
        const name = endpointNameOf(this.#layout, backend.name, s.name);
        if (name === undefined) continue; // a free slot
        // The API does not report weights: the applied one stands in (weight drift is not seen here).
        servers.push({ ...s, name, weight: weights.get(name) ?? 1 });
      }
    }
    // The API reports no serial for a stored certificate (v2.9.27): HAProxy says which leaf it serves.
    const session = await this.#openRuntime(signal);
    try {
      return { servers, leafSerial: parseShowSslCert(await session.send(`show ssl cert ${join(this.#runDir, LEAF_FILE)}`)).serial };
    } finally {
      session.close();
    }
  }

  async flushed(): Promise<void> {
    if (this.#persistTimer !== undefined) this.#startPersist();
    await this.#persisting;
  }

  #cancelPersist(): void {
    clearTimeout(this.#persistTimer);
    this.#persistTimer = undefined;
    this.#persistQueued = undefined;
  }

  #startPersist(): void {
    clearTimeout(this.#persistTimer);
    this.#persistTimer = undefined;
    this.#persisting ??= this.#drainPersist().finally(() => (this.#persisting = undefined));
  }

  async #drainPersist(): Promise<void> {
    while (this.#persistQueued !== undefined) {
      const model = this.#persistQueued;
      this.#persistQueued = undefined;
      try {
        await this.#exclusive(() => this.#save(model));
      } catch (err) {
        this.#log.error({ err: errorMessage(err) }, 'cannot save the live configuration through the Data Plane API; a later reload or restart may not match the live state');
      }
    }
  }

  async #applyOne(op: RuntimeOp, signal: AbortSignal): Promise<OpResult['status']> {
    const client = this.#api.client;
    switch (op.kind) {
      case 'add-server': {
        const free = freeSlots(this.#layout, op.backend);
        // An endpoint that comes back finds the server it left (its own or a slot) in maintenance,
        // still holding its address, port and weight: it only needs to leave maintenance, a
        // runtime call that writes no file (a full disk does not stop it).
        const left = free.find((slot) => sameValues(this.#values.get(valuesKey(op.backend, slot)), op.server));
        if (left !== undefined) {
          await this.#setState(op.backend, left, 'ready', signal);
          this.#layout = withHolder(this.#layout, op.backend, left, op.server.name);
          return 'ok';
        }
        const slot = free[0];
        if (slot === undefined) throw new HaproxyConnectError('DATAPLANE_API', `no free server slot left in backend ${op.backend}`);
        // Address first, in maintenance; then into load balancing. The state goes through the
        // runtime endpoint: the API's file may still say "ready" for a slot freed at runtime, and
        // the API applies only what differs from its file (measured on v2.9.27).
        await this.#editServer(op.backend, slot, { address: op.server.address, port: op.server.port, weight: op.server.weight }, signal);
        await this.#setState(op.backend, slot, 'ready', signal);
        this.#layout = withHolder(this.#layout, op.backend, slot, op.server.name);
        return 'ok';
      }
      case 'set-address': {
        const name = slotOf(this.#layout, op.backend, op.server) ?? op.server;
        // Through maintenance, as the native driver does: it closes idle pooled connections to the old address.
        await this.#setState(op.backend, name, 'maint', signal);
        await this.#editServer(op.backend, name, { address: op.address, port: op.port }, signal);
        await this.#setState(op.backend, name, 'ready', signal);
        return 'ok';
      }
      case 'set-weight': {
        await this.#editServer(op.backend, slotOf(this.#layout, op.backend, op.server) ?? op.server, { weight: op.weight }, signal);
        return 'ok';
      }
      case 'remove-server': {
        // Never deleted: in maintenance, a server is a free slot for the next endpoint, under its
        // own name until the next reload. (Deleting it would take it out of the API's file too,
        // and an endpoint that comes back would find nothing to change.)
        const name = slotOf(this.#layout, op.backend, op.server) ?? op.server;
        await this.#setState(op.backend, name, 'maint', signal);
        this.#layout = withHolder(this.#layout, op.backend, name, undefined);
        return 'ok';
      }
      case 'set-intentions-epoch': {
        const map = this.#mapName(op.path);
        const added = await client.send({ method: 'POST', path: '/services/haproxy/runtime/maps_entries', query: { map }, body: { json: { key: op.epoch, value: '1' } } }, signal);
        if (added.status !== 201 && added.status !== 409) {
          throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API refused to add epoch ${op.epoch} to map ${map}: ${added.status} ${client.apiMessage(added)}`);
        }
        await client.expect(
          { method: 'PUT', path: `/services/haproxy/runtime/maps_entries/${INTENTIONS_EPOCH_CURRENT_KEY}`, query: { map }, body: { json: { value: op.epoch } } },
          [200],
          `make epoch ${op.epoch} current in map ${map}`,
          signal,
        );
        for (const key of op.previous.filter((k) => k !== op.epoch)) {
          await client.expect({ method: 'DELETE', path: `/services/haproxy/runtime/maps_entries/${key}`, query: { map } }, [204, 404], `remove epoch ${key} from map ${map}`, signal);
        }
        return 'ok';
      }
      case 'set-split-weights': {
        const map = this.#mapName(op.path);
        for (const [key, cut] of op.entries) {
          // Split keys hold slashes, which the API's path would split: the id is URL-encoded.
          await client.expect(
            { method: 'PUT', path: `/services/haproxy/runtime/maps_entries/${encodeURIComponent(key)}`, query: { map }, body: { json: { value: String(cut) } } },
            [200],
            `set split ${key} in map ${map}`,
            signal,
          );
        }
        return 'ok';
      }
      case 'set-leaf': {
        if (op.path !== join(this.#runDir, LEAF_FILE)) throw new HaproxyConnectError('DATAPLANE_API', `Leaf ${op.path} is not the run directory's ${LEAF_FILE}`);
        // Stored through the API (the file a start or reload reads), then loaded through HAProxy's
        // own runtime API: v2.9 has no endpoint that loads a certificate.
        await this.#store(STORED_FILES.get(LEAF_FILE) as string, { name: LEAF_FILE, content: op.pem, mode: 0o600 }, signal);
        const session = await this.#openRuntime(signal);
        try {
          const [result] = await applyOps(session, [op], { signal });
          if (result?.status !== 'ok') throw result?.error ?? new HaproxyConnectError('HAPROXY_CLI', `set ssl cert ${op.path} got no answer`);
        } finally {
          session.close();
        }
        return 'ok';
      }
    }
  }

  /**
   * Changes fields of a server through the configuration API: the API applies address, port and
   * weight through HAProxy's runtime API and writes the file, without a reload (answer 200;
   * measured on v2.9.27). It applies only the fields that differ from its file, so the file must
   * hold what HAProxy holds (`#values`). A 202 means it scheduled a reload instead: refused.
   * (`PUT runtime/servers` ignores address and port on v2.9.27: only the states change.)
   */
  async #editServer(backend: string, name: string, changes: Partial<ServerValues>, signal: AbortSignal): Promise<void> {
    const client = this.#api.client;
    const path = `/services/haproxy/configuration/servers/${name}`;
    let answer: DataplaneAnswer | undefined;
    // The version changed between the read and the write (409): read it again, once.
    for (let attempt = 0; answer === undefined || (answer.status === 409 && attempt < 2); attempt++) {
      const current = await client.expect({ method: 'GET', path, query: { backend } }, [200], `read server ${backend}/${name}`, signal);
      const { version, data } = readVersioned(current.body, `server ${backend}/${name}`);
      answer = await client.expect(
        { method: 'PUT', path, query: { backend, version: String(version) }, body: { json: { ...data, ...changes } } },
        [200, 202, 409],
        `change server ${backend}/${name}`,
        signal,
      );
    }
    if (answer.status === 409) throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API refused to change server ${backend}/${name}: ${client.apiMessage(answer)}`);
    if (answer.status === 202)
      throw new HaproxyConnectError(
        'DATAPLANE_API',
        `The Data Plane API scheduled a reload to change server ${backend}/${name} (${Object.keys(changes).join(', ')}) instead of changing it at runtime`,
      );
    const key = valuesKey(backend, name);
    const held = this.#values.get(key);
    if (held !== undefined) this.#values.set(key, { ...held, ...changes });
  }

  /** A server's state through the runtime endpoint: no file is written (the next save records it). */
  async #setState(backend: string, name: string, state: 'ready' | 'maint', signal: AbortSignal): Promise<void> {
    await this.#api.client.expect(
      { method: 'PUT', path: `/services/haproxy/runtime/servers/${name}`, query: { backend }, body: { json: { admin_state: state } } },
      [200],
      `put server ${backend}/${name} ${state === 'maint' ? 'into' : 'out of'} maintenance`,
      signal,
    );
  }

  /** Maps are addressed by their name in `maps_dir` (the run directory). */
  #mapName(path: string): string {
    if (join(this.#runDir, basename(path)) !== path)
      throw new HaproxyConnectError('DATAPLANE_API', `Map ${path} is outside the run directory ${this.#runDir}, where the Data Plane API looks for maps`);
    return basename(path);
  }

  /** The run directory's files: certificates through storage, the others written directly (SPOE configuration, maps, crt-list). */
  async #writeFiles(model: HaproxyModel, signal?: AbortSignal): Promise<void> {
    await this.#files.write(model.files.filter((f) => !STORED_FILES.has(f.name)));
    for (const file of model.files) {
      const storage = STORED_FILES.get(file.name);
      if (storage !== undefined) await this.#store(storage, file, signal);
    }
  }

  /**
   * PUT replaces a stored file; a file not stored yet (404) is created with a multipart POST, which
   * on v2.9.27 schedules a reload whatever `skip_reload` says (measured): it happens only before
   * HAProxy first starts, when the reload command finds no master to signal.
   */
  async #store(storage: string, file: ModelFile, signal?: AbortSignal): Promise<void> {
    if (this.#stored.get(file.name) === file.content) return;
    const client = this.#api.client;
    const replaced = await client.send({ method: 'PUT', path: `${storage}/${file.name}`, query: { skip_reload: 'true' }, body: { text: file.content, contentType: 'text/plain' } }, signal);
    if (replaced.status === 404) {
      const boundary = `haproxy-connect-${randomBytes(12).toString('hex')}`;
      const form = [
        `--${boundary}`,
        `Content-Disposition: form-data; name="file_upload"; filename="${file.name}"`,
        'Content-Type: application/octet-stream',
        '',
        file.content,
        `--${boundary}--`,
        '',
      ].join('\r\n');
      const created = await client.send({ method: 'POST', path: storage, body: { text: form, contentType: `multipart/form-data; boundary=${boundary}` } }, signal);
      if (created.status !== 201 && created.status !== 202) {
        throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API refused to store ${file.name} (POST ${storage}): ${created.status} ${client.apiMessage(created)}`);
      }
    } else if (![200, 202, 204].includes(replaced.status)) {
      throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API refused to replace ${file.name} (PUT ${storage}/${file.name}): ${replaced.status} ${client.apiMessage(replaced)}`);
    }
    // The API writes stored files 0644 (measured on v2.9.27); the leaf holds the private key.
    await chmod(join(this.#runDir, file.name), file.mode).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // nothing on disk to protect
      throw new HaproxyConnectError('FILE_WRITE_FAILED', `Cannot set mode ${file.mode.toString(8)} on ${join(this.#runDir, file.name)}: ${errorMessage(err)}`, { cause: err });
    });
    this.#stored.set(file.name, file.content);
  }

  /** Posts the whole configuration with the version the API holds; a refused configuration is HAPROXY_CONFIG_REJECTED. */
  async #postConfig(text: string, options: Record<string, string>, signal?: AbortSignal): Promise<void> {
    if (this.#posted === text && options['force_reload'] === undefined) return;
    const client = this.#api.client;
    for (let attempt = 0; ; attempt++) {
      const version = await readVersion(client, signal);
      const request: DataplaneRequest = { method: 'POST', path: '/services/haproxy/configuration/raw', query: { version: String(version), ...options }, body: { text, contentType: 'text/plain' } };
      const answer = await client.send(request, signal);
      if (answer.status === 201 || answer.status === 202) {
        this.#posted = text;
        return;
      }
      const message = client.apiMessage(answer);
      // Someone else changed the configuration between our read and our write: read it again once.
      if (answer.status === 409 && attempt === 0) continue;
      if (answer.status === 400) throw new HaproxyConnectError('HAPROXY_CONFIG_REJECTED', `The Data Plane API rejected the configuration: ${message}`);
      // The API writes the file itself: a full disk is the same fault as when we write it.
      if (/no space left on device|read-only file system|permission denied/i.test(message)) {
        throw new HaproxyConnectError('FILE_WRITE_FAILED', `The Data Plane API could not write the configuration: ${message}`);
      }
      throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API refused the configuration (POST configuration/raw, version ${version}): ${answer.status} ${message}`);
    }
  }
}

function sameValues(held: ServerValues | undefined, server: Server): boolean {
  return held !== undefined && held.address === server.address && held.port === server.port && held.weight === server.weight;
}

function valuesKey(backend: string, server: string): string {
  return `${backend}\n${server}`;
}

async function readVersion(client: DataplaneClient, signal?: AbortSignal): Promise<number> {
  const answer = await client.expect({ method: 'GET', path: '/services/haproxy/configuration/version' }, [200], 'report the configuration version', signal);
  const version = Number(answer.body.trim());
  if (!Number.isInteger(version)) throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API reported configuration version ${JSON.stringify(answer.body.slice(0, 100))}, not a number`);
  return version;
}

/** `{"_version": n, "data": {...}}`, as the configuration API answers a GET. */
function readVersioned(body: string, what: string): { version: number; data: Record<string, unknown> } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    parsed = undefined;
  }
  if (parsed !== null && typeof parsed === 'object' && '_version' in parsed && 'data' in parsed && typeof parsed._version === 'number' && parsed.data !== null && typeof parsed.data === 'object') {
    return { version: parsed._version, data: parsed.data as Record<string, unknown> };
  }
  throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API described ${what} as ${body.slice(0, 200)}, not {"_version", "data"}`);
}

/** `GET runtime/servers`: name, address, port, admin_state (ready|maint|drain), operational_state (up|down|stopping). */
export function parseRuntimeServers(body: string, backend: string): Omit<LiveServer, 'weight'>[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API listed the servers of ${backend} as something other than JSON: ${body.slice(0, 200)}`);
  }
  if (!Array.isArray(parsed)) throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API listed the servers of ${backend} as ${typeof parsed}, not an array`);
  return parsed.map((item: unknown) => {
    if (item === null || typeof item !== 'object') throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API listed a server of ${backend} as ${JSON.stringify(item)}`);
    const record = item as Record<string, unknown>;
    const name = record['name'];
    const address = record['address'];
    const port = record['port'];
    const admin = record['admin_state'];
    const op = record['operational_state'];
    if (typeof name !== 'string' || typeof address !== 'string')
      throw new HaproxyConnectError('DATAPLANE_API', `The Data Plane API listed a server of ${backend} without name or address: ${JSON.stringify(item).slice(0, 200)}`);
    const maintenance = admin === 'maint';
    return {
      backend,
      name,
      address,
      port: typeof port === 'number' ? port : 0,
      maintenance,
      adminState: maintenance ? 1 : 0,
      opState: op === 'up' ? 'running' : op === 'stopping' ? 'stopping' : 'stopped',
    };
  });
}
