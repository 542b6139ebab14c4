// Vibration of wheel loaders or dumpers in the US, Europe or Australia whose outside
// temperature is below -20 °C (LANGUAGE.md §8). The region and kind conditions are answered by
// the registry; the temperature condition and the windows run on each selected edge.
explain select stream of id(e), rms(w) from Edge e, Vector of Real w
where region(e) in ('US', 'EU', 'AU')
  and kind(e) in ('wheel loader', 'dumper')
  and signal_value('outside_temperature')@e < -20
  and w in winagg(signal_stream('vibration'), 256, 256)@e;

select stream of id(e), rms(w) from Edge e, Vector of Real w
where region(e) in ('US', 'EU', 'AU')
  and kind(e) in ('wheel loader', 'dumper')
  and signal_value('outside_temperature')@e < -20
  and w in winagg(signal_stream('vibration'), 256, 256)@e
limit 12;
