/**
 * The smallest string greater than every string starting with `prefix`, in "C" collation: a
 * prefix match is the btree range `id >= prefix AND id < prefixUpperBound(prefix)`.
 */
export function prefixUpperBound(prefix: string): string {
  if (prefix === '') return '\u{10FFFF}';
  const last = prefix.charCodeAt(prefix.length - 1);
  return prefix.slice(0, -1) + String.fromCharCode(last + 1);
}
