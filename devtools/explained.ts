/**
 * Failure context for integration tests: a step that fails carries what the test can tell about
 * the system at that moment (a sidecar's recent log lines, Consul's compiled chain, ...).
 */

/** `explained(step)` rejects like `step`, with `context()` appended to the message. */
export function explainedBy(context: () => Promise<string>): <T>(step: Promise<T>) => Promise<T> {
  return async <T>(step: Promise<T>): Promise<T> => {
    try {
      return await step;
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- context ---\n${await context()}`);
    }
  };
}

/** One instance of a versioned mesh service: its id, service name, port key and Meta. */
export interface MeshInstance {
  id: string;
  name: string;
  /** Key of its app port in the test's port table; `<key>Sidecar` is its sidecar's public port. */
  key: string;
  meta: Record<string, string>;
}

/** service-resolver subsets by `Service.Meta.version` (which sidecars inherit from their service). */
export const VERSION_SUBSETS = { v1: { Filter: 'Service.Meta.version == v1' }, v2: { Filter: 'Service.Meta.version == v2' } } as const;
