// Data reduction at the edge: engine speed sent only when it moved more than 50 rpm since the
// last value sent, instead of 10 readings a second.
select stream of id(e), rpm from Edge e, Real rpm
 where kind(e) = 'excavator' and rpm in deadband(signal_stream('engine_speed'), 50)@e
 limit 15;
