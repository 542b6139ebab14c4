// Fleet-wide aggregates by region. Each edge computes partial aggregates over its next 20
// engine-speed readings (2 s at 10 Hz: well inside the 10 s a device has to answer) — sum and
// count for avg; count, avg and m2 for stdev — and the federation merges them. `explain` shows
// the fragment and the merge.
explain select region(e), count(x), avg(x), stdev(x), min(x), max(x) from Edge e, Real x
 where x in vectorof(first_n(signal_stream('engine_speed'), 20))@e
 group by region(e) order by region(e);

select region(e), count(x), avg(x), stdev(x), min(x), max(x) from Edge e, Real x
 where x in vectorof(first_n(signal_stream('engine_speed'), 20))@e
 group by region(e) order by region(e);

// From the registry alone: the fleet by region and kind, and who is connected.
select region(e), kind(e), count(e) from Edge e group by region(e), kind(e) order by region(e), kind(e);
select count(e) from Edge e where online(e);
