// Line charts as inline SVG: one polyline per series, scaled to its own maximum.

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 300;
const HEIGHT = 80;
const TOP = 10; // room for the maximum's label

/**
 * Draw `values` (numbers; null is a gap drawn as 0) into `svg`, replacing its content.
 * @param {SVGSVGElement} svg
 * @param {Array<number | null>} values oldest first
 * @param {number} capacity how many values the full width holds
 */
export function drawChart(svg, values, capacity) {
  svg.setAttribute('viewBox', `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const numbers = values.map((v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0));
  const max = Math.max(1e-9, ...numbers);
  const step = WIDTH / Math.max(1, capacity - 1);
  const start = WIDTH - step * (numbers.length - 1);
  const points = numbers.map((v, i) => {
    const x = start + i * step;
    const y = HEIGHT - (v / max) * (HEIGHT - TOP);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  const base = element('line', { x1: 0, y1: HEIGHT - 0.5, x2: WIDTH, y2: HEIGHT - 0.5 });
  const line = element('polyline', { points: points.join(' ') });
  const label = element('text', { x: 2, y: 8 });
  label.textContent = `max ${format(Math.max(0, ...numbers))}`;
  svg.replaceChildren(base, line, label);
  svg.dataset.points = String(numbers.length);
  svg.dataset.max = String(Math.max(0, ...numbers));
}

/** @param {number} n */
export function format(n) {
  if (n >= 100) return String(Math.round(n));
  if (n >= 10) return n.toFixed(1);
  return String(Math.round(n * 100) / 100);
}

/** @param {string} name @param {Record<string, number>} attributes */
function element(name, attributes) {
  const el = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
  return el;
}
