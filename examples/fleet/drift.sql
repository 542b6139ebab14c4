// On-device drift detection: every edge compares each 100 engine-speed readings with the
// reference the fleet was commissioned with (1,500 rpm, standard deviation 250) and reports only
// windows that moved more than 3 standard errors. Nothing else leaves the devices.
select stream of id(e), kind(e), d from Edge e, Real d
 where d in drift(signal_stream('engine_speed'), 1500, 250, 100)@e and abs(d) > 3
 limit 10;

// Outliers against each device's own recent past: z-scores of vibration above 5.
select stream of id(e), z from Edge e, Real z
 where z in zscore(signal_stream('vibration'), 200)@e and z > 5
 limit 5;
