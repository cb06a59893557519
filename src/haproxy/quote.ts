/**
 * One haproxy.cfg word that HAProxy 2.6.12's configuration parser reads back as exactly the given
 * string. PURE and deterministic. The rules come from configuration.txt §2.2 "Quoting and
 * escaping" and §2.3 "Environment variables", corrected where HAProxy 2.6.12 does otherwise
 * (measured; test/unit/quote.test.ts checks them against the real binary):
 *
 * - Outside quotes, a space, a tab, a vertical tab or a form feed separates words; `#` starts a
 *   comment even inside a word; a backslash escapes (but `\$` stays two characters, and `\<TAB>`
 *   is a backslash and then a separator, whatever the §2.2 table says).
 * - Inside single quotes nothing is interpreted, so a single quote cannot be written there.
 * - Inside double quotes, `\\`, `\"`, `\$`, `\n`, `\r`, `\t` and `\xHH` are escapes and `$` starts
 *   an environment variable: `"$"` or `"$1"` is a fatal error, and an unset `"${X}"` is empty.
 * - CR and LF end the line even inside quotes; a raw NUL is a fatal "Stray NUL character"; `\x00`
 *   is accepted and silently cuts the word there. Bytes from 0x80 up are ordinary everywhere.
 * - There is no line length limit (a 1.1 MB line loads); only the keyword may cap the value.
 *
 * The word is chosen in this order: bare when every character is printable ASCII other than
 * space and `"#$'\` (all names and paths the model holds today, so their rendering is unchanged);
 * otherwise in single quotes when there is no `'` and no ASCII control character; otherwise in
 * double quotes, with `\\ \" \$ \n \r \t` and `\xHH` for the other control characters. Non-ASCII
 * text is written as is (UTF-8).
 *
 * This fixes the word, not what the keyword then does with it: an argument that is itself parsed
 * again (log-format strings with `%`, sample-fetch and converter arguments with `,` and `)`, ACL
 * patterns starting with `-`, words like `if` or `{` in a condition) needs its own escaping or
 * validation before it gets here. Addresses are one such case, see quoteAddress.
 */
import { HaproxyConnectError } from '../errors.js';

/** Printable ASCII (0x21-0x7e) without `"` 0x22, `#` 0x23, `$` 0x24, `'` 0x27 and `\` 0x5c. */
const BARE_WORD = /^[\x21\x25\x26\x28-\x5b\x5d-\x7e]+$/;
/** Anything but `'` and ASCII controls (which include CR and LF) can sit inside single quotes. */
const SINGLE_QUOTABLE = /^[^'\x00-\x1f\x7f]+$/;
/** A UTF-16 surrogate that is not half of a pair: such a string has no UTF-8 form to write. */
const LONE_SURROGATE = /[\ud800-\udfff]/u;
/** The longest excerpt of a refused value shown in the error message. */
const MAX_SHOWN_CHARS = 120;
/**
 * In an address word every `$` is consumed by a second environment expansion, quoted or not, with
 * the name after it (`a$/b` → `a/b`, `a$$b` → `a`); `,` separates listeners in `bind` and
 * `stats socket`, quoted or not (`'unix@/x.sock,127.0.0.1:9000'` also listens on TCP 9000).
 */
const ADDRESS_HAZARDS = /[$,]/;

const DOUBLE_QUOTED_ESCAPES: ReadonlyMap<string, string> = new Map([
  ['\\', '\\\\'],
  ['"', '\\"'],
  ['$', '\\$'],
  ['\n', '\\n'],
  ['\r', '\\r'],
  ['\t', '\\t'],
]);

function shown(value: string): string {
  const excerpt = value.length > MAX_SHOWN_CHARS ? `${value.slice(0, MAX_SHOWN_CHARS)}…` : value;
  return JSON.stringify(excerpt);
}

function unquotable(value: string, reason: string): never {
  throw new HaproxyConnectError('MODEL_INVALID', `Cannot write ${shown(value)} as one haproxy.cfg word: ${reason}`);
}

function escapeForDoubleQuotes(char: string): string {
  const escaped = DOUBLE_QUOTED_ESCAPES.get(char);
  if (escaped !== undefined) return escaped;
  const code = char.charCodeAt(0);
  if (code < 0x20 || code === 0x7f) return `\\x${code.toString(16).padStart(2, '0')}`;
  return char;
}

/**
 * `value` as one haproxy.cfg word (see the module comment for the rules). Throws MODEL_INVALID
 * for what no word can carry: the empty string (HAProxy 2.6.12 takes an empty word as the end of
 * the arguments and silently ignores the rest of the line, `if …` conditions included), a NUL
 * character (it ends HAProxy's C strings), and a lone UTF-16 surrogate (no UTF-8 form).
 */
export function quoteArg(value: string): string {
  if (value === '') {
    unquotable(value, 'HAProxy takes an empty word as the end of the arguments and ignores the rest of the line');
  }
  if (value.includes('\0')) unquotable(value, 'HAProxy cannot carry a NUL character in a word');
  if (LONE_SURROGATE.test(value)) unquotable(value, 'it contains a lone UTF-16 surrogate, which has no UTF-8 form');
  if (BARE_WORD.test(value)) return value;
  if (SINGLE_QUOTABLE.test(value)) return `'${value}'`;
  return `"${Array.from(value, escapeForDoubleQuotes).join('')}"`;
}

/**
 * An address word (`bind`, `server`, `stats socket`, a ring's `server`: `unix@/path`, `ip:port`)
 * as quoteArg writes it, after refusing what HAProxy 2.6.12 re-reads inside addresses whatever the
 * quoting: `$` (environment expansion, no escape exists) and `,` (a second listener). `haproxy -c`
 * does not see either: it accepts such a config and the bind goes elsewhere at start.
 */
export function quoteAddress(address: string): string {
  const hazard = ADDRESS_HAZARDS.exec(address);
  if (hazard !== null) {
    unquotable(address, hazard[0] === '$' ? "HAProxy expands '$' in addresses even when quoted, and nothing escapes it" : "',' separates listeners in HAProxy addresses even when quoted");
  }
  return quoteArg(address);
}
