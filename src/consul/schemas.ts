/**
 * Zod schemas for the Consul agent responses haproxy-connect reads. Only the fields we use are
 * declared; objects stay non-strict so fields added by newer Consul versions are ignored.
 * Consul writes `null` for empty slices and maps in several places, so collections accept null.
 */
import { z } from 'zod';

/** An array that Consul may encode as `null` (a nil Go slice); null and absent become []. */
function nullableArray<T extends z.ZodType>(item: T) {
  return z
    .array(item)
    .nullish()
    .transform((v) => v ?? []);
}

/** A string Consul may omit (omitempty) or encode as null; both become ''. */
const optionalString = z
  .string()
  .nullish()
  .transform((v) => v ?? '');

/** A Consul integer field that may be omitted (omitempty): absent becomes 0. */
const optionalInt = z
  .number()
  .int()
  .nullish()
  .transform((v) => v ?? 0);

/** Proxy.Config / Upstreams[].Config: an opaque map whose values registration.ts validates. */
const opaqueConfig = z
  .record(z.string(), z.unknown())
  .nullish()
  .transform((v) => v ?? {});

// GET /v1/agent/self
export const agentSelfSchema = z.object({
  Config: z.object({
    Datacenter: z.string(),
    NodeName: z.string(),
  }),
});

// GET /v1/agent/services: a map from service ID to a summary of the service.
export const agentServicesSchema = z
  .record(
    z.string(),
    z.object({
      Kind: optionalString,
      ID: z.string(),
      Service: z.string(),
      Tags: nullableArray(z.string()),
      Proxy: z
        .object({
          DestinationServiceName: optionalString,
          DestinationServiceID: optionalString,
        })
        .nullish(),
    }),
  )
  .nullish()
  .transform((v) => v ?? {});

export const upstreamJsonSchema = z.object({
  DestinationType: optionalString,
  DestinationNamespace: optionalString,
  DestinationPartition: optionalString,
  DestinationName: optionalString,
  Datacenter: optionalString,
  LocalBindAddress: optionalString,
  LocalBindPort: optionalInt,
  LocalBindSocketPath: optionalString,
  LocalBindSocketMode: optionalString,
  Config: opaqueConfig,
});

export type UpstreamJson = z.infer<typeof upstreamJsonSchema>;

// GET /v1/agent/service/<id>
export const agentServiceSchema = z.object({
  Kind: optionalString,
  ID: z.string(),
  Service: z.string(),
  Address: optionalString,
  Port: optionalInt,
  Namespace: optionalString,
  Partition: optionalString,
  Proxy: z
    .object({
      DestinationServiceName: optionalString,
      DestinationServiceID: optionalString,
      LocalServiceAddress: optionalString,
      LocalServicePort: optionalInt,
      Config: opaqueConfig,
      Upstreams: nullableArray(upstreamJsonSchema),
      // Merged from proxy-defaults by the agent; its values are checked in registration.ts so an
      // error names the field and the value.
      AccessLogs: z.record(z.string(), z.unknown()).nullish(),
      // Checked in expose.ts, so a bad path is left out alone and named with its value.
      Expose: z.record(z.string(), z.unknown()).nullish(),
    })
    .nullish(),
});

// GET /v1/agent/checks: a map from check ID to the check (only what Proxy.Expose.Checks needs).
export const agentChecksSchema = z
  .record(
    z.string(),
    z.object({
      CheckID: z.string(),
      ServiceID: optionalString,
      Type: optionalString,
      ExposedPort: optionalInt,
      Output: optionalString,
    }),
  )
  .nullish()
  .transform((v) => v ?? {});

/** The agent's registration of one service, as validated at the boundary (input of registration.ts). */
export type AgentServiceJson = z.infer<typeof agentServiceSchema>;

// GET /v1/agent/connect/ca/leaf/<service>
export const leafSchema = z.object({
  SerialNumber: z.string(),
  CertPEM: z.string(),
  PrivateKeyPEM: z.string(),
  ValidBefore: z.string(),
  ModifyIndex: z.number().int().nonnegative(),
});

// GET /v1/agent/connect/ca/roots
export const rootsSchema = z.object({
  TrustDomain: z.string(),
  ActiveRootID: z.string(),
  Roots: nullableArray(
    z.object({
      ID: z.string(),
      RootCert: z.string(),
      IntermediateCerts: nullableArray(z.string()),
      Active: z.boolean(),
    }),
  ),
});

/**
 * One entry of /v1/health/connect/<name> and of a prepared query's `Nodes`. Entries are checked one
 * by one (client.ts): an entry that does not fit is reported and left out, never the whole answer.
 * Ranges (port, weight) and the address are judged by translate, which names the value.
 */
export const serviceEntrySchema = z.object({
  Node: z.object({
    Node: z.string(),
    Address: optionalString,
  }),
  Service: z.object({
    ID: z.string(),
    Address: optionalString,
    Port: z.number(),
    Weights: z.object({ Passing: z.number(), Warning: z.number().nullish() }).nullish(),
  }),
  // Absent in prepared query answers (they hold healthy instances only).
  Checks: nullableArray(z.object({ Status: z.string() })),
});

export const healthConnectSchema = nullableArray(z.unknown());

// GET /v1/query/<name>/execute
export const preparedQueryResultSchema = z.object({
  Nodes: nullableArray(z.unknown()),
});

// GET /v1/connect/intentions/match?by=destination&name=<svc>: a map from the queried name to the
// matching intentions in precedence order (null when none). L7 intentions have no Action but
// Permissions; Consul OSS omits the partition and peer fields.
export const intentionJsonSchema = z.object({
  SourceName: z.string(),
  SourceNS: optionalString,
  SourcePartition: optionalString,
  SourcePeer: optionalString,
  DestinationName: z.string(),
  DestinationNS: optionalString,
  DestinationPartition: optionalString,
  Action: z
    .enum(['allow', 'deny', ''])
    .nullish()
    .transform((v) => v ?? ''),
  // Parsed one intention at a time by consul/permissions.ts: a bad permission fails its intention only.
  Permissions: nullableArray(z.unknown()),
  JWT: z.unknown().nullish(),
  Precedence: z.number().int(),
});

export const intentionsMatchSchema = z.record(z.string(), nullableArray(intentionJsonSchema));

/** A duration as Consul writes it: a Go duration string, or integer nanoseconds (L7.md finding 3). */
const durationJson = z.union([z.string(), z.number()]).nullish();

// POST /v1/discovery-chain/<name>?compile-dc=<dc> (agent/structs/discovery_chain.go)
const chainTargetSchema = z.object({
  ID: z.string(),
  Service: z.string(),
  ServiceSubset: optionalString,
  Namespace: optionalString,
  Partition: optionalString,
  Datacenter: optionalString,
  Peer: optionalString,
  MeshGateway: z.object({ Mode: optionalString }).nullish(),
  Subset: z.object({ Filter: optionalString, OnlyPassing: z.boolean().nullish() }).nullish(),
  ConnectTimeout: durationJson,
});

const hashPolicySchema = z.object({
  Field: optionalString,
  FieldValue: optionalString,
  SourceIP: z.boolean().nullish(),
  Terminal: z.boolean().nullish(),
});

const optionalBool = z
  .boolean()
  .nullish()
  .transform((v) => v === true);

/** A config entry's `{Add, Set, Remove}` header changes (service-router destinations, splits). */
const headerOpsSchema = z
  .object({
    Add: z.record(z.string(), z.string()).nullish(),
    Set: z.record(z.string(), z.string()).nullish(),
    Remove: nullableArray(z.string()),
  })
  .nullish();

const headerMatchSchema = z.object({
  Name: z.string(),
  Present: optionalBool,
  Exact: optionalString,
  Prefix: optionalString,
  Suffix: optionalString,
  Regex: optionalString,
  Invert: optionalBool,
});

const queryMatchSchema = z.object({ Name: z.string(), Present: optionalBool, Exact: optionalString, Regex: optionalString });

const routeDefinitionSchema = z.object({
  Match: z
    .object({
      HTTP: z
        .object({
          PathExact: optionalString,
          PathPrefix: optionalString,
          PathRegex: optionalString,
          Header: nullableArray(headerMatchSchema),
          QueryParam: nullableArray(queryMatchSchema),
          Methods: nullableArray(z.string()),
        })
        .nullish(),
    })
    .nullish(),
  Destination: z
    .object({
      PrefixRewrite: optionalString,
      RequestTimeout: durationJson,
      IdleTimeout: durationJson,
      NumRetries: optionalInt,
      RetryOnConnectFailure: optionalBool,
      RetryOn: nullableArray(z.string()),
      RetryOnStatusCodes: nullableArray(z.number().int()),
      RequestHeaders: headerOpsSchema,
      ResponseHeaders: headerOpsSchema,
    })
    .nullish(),
});

const chainNodeSchema = z.object({
  Type: z.string(),
  Name: z.string(),
  Routes: nullableArray(z.object({ Definition: routeDefinitionSchema, NextNode: z.string() })),
  Splits: nullableArray(
    z.object({
      // Consul omits a zero weight (omitempty).
      Weight: z.number().default(0),
      NextNode: z.string(),
      Definition: z.object({ RequestHeaders: headerOpsSchema, ResponseHeaders: headerOpsSchema }).nullish(),
    }),
  ),
  Resolver: z
    .object({
      ConnectTimeout: durationJson,
      RequestTimeout: durationJson,
      Target: z.string(),
      Failover: z.object({ Targets: nullableArray(z.string()) }).nullish(),
    })
    .nullish(),
  LoadBalancer: z
    .object({
      Policy: optionalString,
      LeastRequestConfig: z.object({ ChoiceCount: z.number().int().nullish() }).nullish(),
      HashPolicies: nullableArray(hashPolicySchema),
    })
    .nullish(),
});

export const discoveryChainSchema = z.object({
  Chain: z.object({
    ServiceName: z.string(),
    Datacenter: optionalString,
    Protocol: optionalString,
    StartNode: z.string(),
    Nodes: z
      .record(z.string(), chainNodeSchema)
      .nullish()
      .transform((v) => v ?? {}),
    Targets: z
      .record(z.string(), chainTargetSchema)
      .nullish()
      .transform((v) => v ?? {}),
  }),
});

export type DiscoveryChainJson = z.output<typeof discoveryChainSchema>['Chain'];

// GET /v1/config/mesh/mesh (agent/structs/config_entry_mesh.go): 404 when there is no entry.
// HTTP is omitted when unset (omitempty); its value is checked in client.ts so the error names it.
export const meshConfigEntrySchema = z.object({
  Kind: z.literal('mesh'),
  HTTP: z.object({ SanitizeXForwardedClientCert: z.unknown().optional() }).nullish(),
});
