package proxy

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, each labelled by function (its Consul service name).
const (
	metricPrefix = "caravan_proxy_"
)

// durationBuckets, in seconds: a millisecond to two minutes, for queue
// waits (cold starts) and requests alike.
var durationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// metrics are the proxy's Prometheus metrics. Gauges are read from the
// pools at scrape time (collector); counters and histograms count as
// requests end.
type metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	queueWait     *prometheus.HistogramVec
	queuedTotal   *prometheus.CounterVec
	coldStarts    *prometheus.CounterVec
	queueFull     *prometheus.CounterVec
	queueTimeouts *prometheus.CounterVec
	upstreamErrs  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, p *Proxy) *metrics {
	fn := []string{"function"}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "requests_total",
			Help: "Requests answered, by function and status code (the proxy's own 502, 503 and 504 included)."}, []string{"function", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: metricPrefix + "request_duration_seconds",
			Help: "Time from a request's arrival to its end, queue wait included.", Buckets: durationBuckets}, fn),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: metricPrefix + "queue_wait_seconds",
			Help: "Time requests that queued waited for a container.", Buckets: durationBuckets}, fn),
		queuedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "queued_total",
			Help: "Requests that waited in the queue (no container had room)."}, fn),
		coldStarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "cold_start_waits_total",
			Help: "Requests that arrived while the function had no ready container and waited for one."}, fn),
		queueFull: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "queue_full_total",
			Help: "Requests answered 503: the queue held max_requests."}, fn),
		queueTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "queue_timeouts_total",
			Help: "Requests answered 504: they waited the queue timeout."}, fn),
		upstreamErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricPrefix + "upstream_errors_total",
			Help: "Requests whose container failed them (502, or a response cut off)."}, fn),
	}
	reg.MustRegister(m.requests, m.duration, m.queueWait, m.queuedTotal, m.coldStarts, m.queueFull,
		m.queueTimeouts, m.upstreamErrs, &collector{p: p})
	return m
}

// fnMetrics are one function's handles of the metrics every request
// counts, looked up once (a label lookup hashes the labels and takes the
// vector's lock): its 200s and its duration. Each is made on its first
// use, so a function shows no series before its first request.
type fnMetrics struct {
	m        *metrics
	name     string
	ok       atomic.Pointer[prometheus.Counter]
	duration atomic.Pointer[prometheus.Observer]
}

func (m *metrics) function(name string) *fnMetrics { return &fnMetrics{m: m, name: name} }

// answered counts one request's end: its status code and how long it took
// (seconds).
func (f *fnMetrics) answered(code int, seconds float64) {
	if code == 200 {
		c := f.ok.Load()
		if c == nil {
			v := f.m.requests.WithLabelValues(f.name, "200")
			c = &v
			f.ok.Store(c) // a race stores the same child twice
		}
		(*c).Inc()
	} else {
		f.m.requests.WithLabelValues(f.name, strconv.Itoa(code)).Inc()
	}
	o := f.duration.Load()
	if o == nil {
		v := f.m.duration.WithLabelValues(f.name)
		o = &v
		f.duration.Store(o)
	}
	(*o).Observe(seconds)
}

// collector exports the pools' gauges as they are at scrape time.
type collector struct{ p *Proxy }

var (
	descInFlight = prometheus.NewDesc(metricPrefix+"in_flight", "Requests containers are serving now.", []string{"function"}, nil)
	descQueued   = prometheus.NewDesc(metricPrefix+"queued", "Requests waiting for a container with room.", []string{"function"}, nil)
	descReady    = prometheus.NewDesc(metricPrefix+"containers_ready", "Containers that may take requests.", []string{"function"}, nil)
	descDraining = prometheus.NewDesc(metricPrefix+"containers_draining", "Containers that take no new requests but still serve some.", []string{"function"}, nil)
	descStarting = prometheus.NewDesc(metricPrefix+"containers_starting", "Containers registered whose checks do not pass yet.", []string{"function"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descInFlight
	ch <- descQueued
	ch <- descReady
	ch <- descDraining
	ch <- descStarting
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, fl := range c.p.Load().Functions {
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(fl.InFlight), fl.Function)
		ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(fl.Queued), fl.Function)
		ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, float64(fl.Ready), fl.Function)
		ch <- prometheus.MustNewConstMetric(descDraining, prometheus.GaugeValue, float64(fl.Draining), fl.Function)
		ch <- prometheus.MustNewConstMetric(descStarting, prometheus.GaugeValue, float64(fl.Starting), fl.Function)
	}
}
