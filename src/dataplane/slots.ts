/**
 * Spare server slots, the original tool's answer to a Data Plane API that cannot add an mTLS
 * server at runtime: every upstream backend gets a few servers in maintenance with the backend's
 * TLS options, and a new endpoint takes a free slot (address, port, ready) instead of a reload.
 * The reconcile loop keeps naming servers by endpoint; the layout maps slot names to those names.
 * A removed endpoint's server stays, in maintenance, as one more free slot under its own name.
 * A reload starts a fresh layout: every endpoint under its own name, all slots free. PURE.
 */
import type { Backend, HaproxyModel, Server } from '../haproxy/model.js';

/** Free slots per upstream backend after a reload: at least this many... */
export const MIN_SLOTS = 4;
/** ...or this share of the backend's servers, for large backends whose churn comes in bursts. */
export const SLOT_SHARE = 0.25;
/** Where a free slot points: nothing listens there, and it is in maintenance anyway. */
const FREE_SLOT_ADDRESS = '127.0.0.1';
const FREE_SLOT_PORT = 1;
/** The weight free slots are written with; a new endpoint's own weight is set when it takes one. */
const SLOT_WEIGHT = 1;

/** Slot names cannot collide with endpoint server names, which end in `_<8 hex>` or are 8 hex digits (haproxy-names.ts). */
export function slotName(index: number): string {
  return `slot-${index}`;
}

/** What HAProxy holds for a server beside its state: a freed slot keeps its last holder's. */
export type ServerValues = Pick<Server, 'address' | 'port' | 'weight'>;

/** Per upstream backend: slot name → the endpoint server it holds, or undefined when free. */
export type SlotLayout = ReadonlyMap<string, ReadonlyMap<string, string | undefined>>;

function slotted(backend: Backend): boolean {
  return backend.tls !== undefined;
}

/** All slots free, sized for each upstream backend of `model`. */
export function freshLayout(model: HaproxyModel): SlotLayout {
  const layout = new Map<string, Map<string, string | undefined>>();
  for (const backend of model.backends.filter(slotted)) {
    const count = Math.max(MIN_SLOTS, Math.ceil(backend.servers.length * SLOT_SHARE));
    layout.set(backend.name, new Map(Array.from({ length: count }, (_, i) => [slotName(i), undefined])));
  }
  return layout;
}

/**
 * `model` as HAProxy holds it under `layout`: an endpoint in a slot appears under the slot's name,
 * the others under their own; free slots are written in maintenance, with the values `held` says
 * HAProxy keeps for them (a freed slot keeps its last holder's address and weight), else a
 * placeholder.
 */
export function slottedModel(model: HaproxyModel, layout: SlotLayout, held?: (backend: string, slot: string) => ServerValues | undefined): HaproxyModel {
  return {
    ...model,
    backends: model.backends.map((backend) => {
      const slots = layout.get(backend.name);
      if (slots === undefined) return backend;
      const byName = new Map(backend.servers.map((s) => [s.name, s]));
      const inSlots = new Set<string>();
      const slotServers: Server[] = [];
      for (const [slot, holder] of slots) {
        const server = holder === undefined ? undefined : byName.get(holder);
        if (server === undefined) {
          const values = held?.(backend.name, slot) ?? { address: FREE_SLOT_ADDRESS, port: FREE_SLOT_PORT, weight: SLOT_WEIGHT };
          slotServers.push({ name: slot, address: values.address, port: values.port, weight: values.weight, maintenance: true });
        } else {
          inSlots.add(server.name);
          slotServers.push({ ...server, name: slot });
        }
      }
      return { ...backend, servers: [...backend.servers.filter((s) => !inSlots.has(s.name)), ...slotServers] };
    }),
  };
}

/** The slot holding `server` in `backend`, if any. */
export function slotOf(layout: SlotLayout, backend: string, server: string): string | undefined {
  for (const [slot, holder] of layout.get(backend) ?? []) if (holder === server) return slot;
  return undefined;
}

/** Free slots of `backend`, in order. */
export function freeSlots(layout: SlotLayout, backend: string): string[] {
  return [...(layout.get(backend) ?? [])].filter(([, holder]) => holder === undefined).map(([slot]) => slot);
}

/** A copy of `layout` with `slot` of `backend` holding `server` (undefined: freed). */
export function withHolder(layout: SlotLayout, backend: string, slot: string, server: string | undefined): SlotLayout {
  const next = new Map(layout);
  next.set(backend, new Map(layout.get(backend) ?? []).set(slot, server));
  return next;
}

/** A live server name as the reconcile loop knows it: the endpoint a slot holds; undefined for a free slot. */
export function endpointNameOf(layout: SlotLayout, backend: string, live: string): string | undefined {
  const slots = layout.get(backend);
  if (slots === undefined || !slots.has(live)) return live;
  return slots.get(live);
}
