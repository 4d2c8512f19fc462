// The month's alarms per day as stacked bars, one colour per category
// (Apache ECharts, only the parts used, in a chunk of its own loaded after
// the dashboard). A click on a bar picks that day, as on the calendar.

import { BarChart } from 'echarts/charts';
import { GridComponent, LegendComponent, TooltipComponent } from 'echarts/components';
import * as echarts from 'echarts/core';
import { CanvasRenderer } from 'echarts/renderers';
import { useEffect, useRef } from 'react';
import type { Schemas } from '../api/client';

echarts.use([BarChart, GridComponent, LegendComponent, TooltipComponent, CanvasRenderer]);

interface Props {
  days: Schemas['CalendarDay'][];
  /** Category names in the order the API lists them, translated. */
  categories: { id: string; label: string }[];
  onDay: (date: string) => void;
  /** What the chart shows, for screen readers. */
  label: string;
}

export default function MonthChart({ days, categories, onDay, label }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const chart = useRef<echarts.ECharts | null>(null);
  // The click handler is bound once; it reads the latest props.
  const latest = useRef({ days, onDay });
  latest.current = { days, onDay };

  useEffect(() => {
    if (!box.current) return;
    const c = echarts.init(box.current, null, { renderer: 'canvas' });
    chart.current = c;
    c.on('click', (p) => {
      const date = latest.current.days[p.dataIndex]?.date;
      if (date) latest.current.onDay(date);
    });
    const resize = new ResizeObserver(() => c.resize());
    resize.observe(box.current);
    return () => {
      resize.disconnect();
      c.dispose();
      chart.current = null;
    };
  }, []);

  useEffect(() => {
    chart.current?.setOption(
      {
        animation: false,
        tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
        legend: { type: 'scroll', bottom: 0 },
        grid: { left: 32, right: 8, top: 8, bottom: 40 },
        xAxis: { type: 'category', data: days.map((d) => String(Number(d.date.slice(8)))) },
        yAxis: { type: 'value', minInterval: 1 },
        series: categories.map((c) => ({
          type: 'bar',
          stack: 'alarms',
          name: c.label,
          emphasis: { focus: 'series' },
          data: days.map((d) => d.counts[c.id] ?? 0),
        })),
      },
      { notMerge: true },
    );
  }, [days, categories]);

  return <div ref={box} role="img" aria-label={label} style={{ height: 240, width: '100%' }} data-testid="month-chart" />;
}
