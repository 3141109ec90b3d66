/** Prints rows under a header as aligned columns on stdout (two spaces apart, no trailing blanks). */
export function printTable(header: string[], rows: string[][]): void {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((row) => (row[i] ?? '').length)));
  for (const row of all)
    process.stdout.write(`${row.map((c, i) => (c ?? '').padEnd(widths[i]!)).join('  ')}`.trimEnd() + '\n');
}
