/** Process-tree inspection through /proc, for tests that must prove nothing is left behind. */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { isAlive, procStat } from '../src/driver/pids.js';

export { isAlive };

/** All live descendants of `pid`. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const child = Number(entry);
    const parent = procStat(child)?.ppid;
    if (parent === undefined) continue;
    children.set(parent, [...(children.get(parent) ?? []), child]);
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const c of children.get(queue.shift() as number) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/** The command name of `pid` (/proc/<pid>/comm), undefined when it is gone. */
export function commandName(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** The argument list of `pid` (/proc/<pid>/cmdline), undefined when it is gone. */
export function commandLine(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
  } catch {
    return undefined;
  }
}

/** Live processes whose process group is `pgid` (an HAProxy master runs detached: its group is its pid). */
export function processGroup(pgid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (procStat(pid)?.pgrp === pgid && isAlive(pid)) out.push(pid);
  }
  return out;
}

/** A listening TCP socket (IPv4 or IPv6) and the live processes holding it. */
export interface TcpListener {
  inode: number;
  pids: number[];
}

/**
 * The listening TCP sockets on `port` (/proc/net/tcp and tcp6, state 0A) and who holds each. Two
 * HAProxy instances on one port with SO_REUSEPORT are two sockets here.
 */
export function tcpListeners(port: number): TcpListener[] {
  const inodes = new Set<number>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const local = fields[1];
      if (local === undefined || fields[3] !== '0A') continue;
      if (Number.parseInt(local.slice(local.lastIndexOf(':') + 1), 16) === port) inodes.add(Number(fields[9]));
    }
  }
  const holders = new Map<number, number[]>([...inodes].map((inode) => [inode, []]));
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${entry}/fd/${fd}`);
      } catch {
        continue;
      }
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      const pids = inode === undefined ? undefined : holders.get(Number(inode));
      if (pids !== undefined && !pids.includes(Number(entry))) pids.push(Number(entry));
    }
  }
  return [...holders].map(([inode, pids]) => ({ inode, pids }));
}

/** Established TCP connections that `pid` holds to `port` on any address (/proc/net/tcp and tcp6, state 01). */
export function tcpConnectionsTo(pid: number, port: number): number {
  const owned = new Set<number>();
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return 0;
  }
  for (const fd of fds) {
    try {
      const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
      if (inode !== undefined) owned.add(Number(inode));
    } catch {
      // closed meanwhile
    }
  }
  let count = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const remote = fields[2];
      if (remote === undefined || fields[3] !== '01') continue;
      if (Number.parseInt(remote.slice(remote.lastIndexOf(':') + 1), 16) === port && owned.has(Number(fields[9]))) count += 1;
    }
  }
  return count;
}
