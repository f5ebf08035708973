/**
 * The chat panel's Content-Security-Policy. Model answers are rendered as Markdown, so an
 * answer can hold `![x](https://host/?q=…)`: any remote source allowed here would let a
 * model (or a prompt injected through a file) make the editor fetch a URL and send data off
 * the machine. Images come from the extension itself or inline `data:` URIs only; nothing
 * else is fetched (no connect-src, no remote fonts, styles or frames).
 */
export function chatPanelCsp(cspSource: string, nonce: string): string {
  return `default-src 'none'; style-src ${cspSource} 'unsafe-inline'; img-src ${cspSource} data:; script-src 'nonce-${nonce}';`;
}
