/**
 * The smallest HAProxy configuration the process tests need: a TCP proxy from
 * `unix@<dir>/front.sock` to one server on a unix socket, with optional global lines.
 */
export function tinyHaproxyConfig(dir: string, options: { global?: readonly string[]; server?: string; extra?: string } = {}): string {
  return [
    'global',
    ...(options.global ?? []).map((line) => `  ${line}`),
    'defaults',
    '  mode tcp',
    '  timeout connect 1s',
    '  timeout client 5s',
    '  timeout server 5s',
    'frontend front',
    `  bind unix@${dir}/front.sock`,
    '  default_backend back',
    'backend back',
    `  server s1 unix@${options.server ?? `${dir}/app.sock`}`,
    options.extra ?? '',
    '',
  ].join('\n');
}
