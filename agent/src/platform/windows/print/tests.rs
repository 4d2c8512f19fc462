use super::*;

/// An event 307 as `EvtRender(EvtRenderEventXml)` gives it.
fn event_307(record: u64, document: &str, pages: &str) -> String {
    format!(
        r#"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider Name='Microsoft-Windows-PrintService' Guid='{{747ef6fd-e535-4d16-b510-42c90f6873a1}}'/><EventID>307</EventID><Version>0</Version><Level>4</Level><Task>26</Task><Opcode>11</Opcode><Keywords>0x4000000000000840</Keywords><TimeCreated SystemTime='2024-01-05T09:30:12.1234567Z'/><EventRecordID>{record}</EventRecordID><Correlation/><Execution ProcessID='3012' ThreadID='4512'/><Channel>Microsoft-Windows-PrintService/Operational</Channel><Computer>PC01.office.example</Computer><Security UserID='S-1-5-21-1004336348-1177238915-682003330-1001'/></System><UserData><DocumentPrinted xmlns='http://manifests.microsoft.com/win/2005/08/windows/printing/spooler/core/events'><Param1>12</Param1><Param2>{document}</Param2><Param3>alice</Param3><Param4>\\PC01</Param4><Param5>HP LaserJet 4 (Floor 2)</Param5><Param6>USB001</Param6><Param7>482104</Param7><Param8>{pages}</Param8></DocumentPrinted></UserData></Event>"#
    )
}

#[test]
fn a_printed_document_is_read_from_event_307() {
    let job = parse_printed(&event_307(88, "Q3 figures &amp; forecast.xlsx", "14")).unwrap();
    assert_eq!(
        job,
        Printed {
            record_id: 88,
            at_us: 1_704_447_012_123_456,
            user_sid: "S-1-5-21-1004336348-1177238915-682003330-1001".into(),
            user: "alice".into(),
            document: "Q3 figures & forecast.xlsx".into(),
            printer: "HP LaserJet 4 (Floor 2)".into(),
            pages: 14,
        }
    );
}

#[test]
fn odd_values_are_read_as_written_or_left_out() {
    // Characters by reference, and a document Windows did not name.
    let job = parse_printed(&event_307(1, "&#x65E5;&#26412; &lt;draft&gt;", "")).unwrap();
    assert_eq!(job.document, "日本 <draft>");
    assert_eq!(job.pages, 0);
    let job = parse_printed(&event_307(2, "Print Document", "not a number")).unwrap();
    assert_eq!((job.document.as_str(), job.pages), ("Print Document", 0));
    // An unknown entity stays as it was.
    assert_eq!(
        parse_printed(&event_307(3, "a &nbsp; b", "1"))
            .unwrap()
            .document,
        "a &nbsp; b"
    );
}

#[test]
fn other_events_and_broken_ones_are_not_jobs() {
    let other = event_307(5, "x", "1").replace("<EventID>307<", "<EventID>308<");
    assert_eq!(parse_printed(&other), None);
    assert_eq!(record_id(&other), Some(5));
    let no_data = event_307(6, "x", "1").replace("DocumentPrinted", "Something");
    assert_eq!(parse_printed(&no_data), None);
    let bad_time = event_307(7, "x", "1").replace("2024-01-05T09:30:12.1234567Z", "yesterday");
    assert_eq!(parse_printed(&bad_time), None);
    assert_eq!(parse_printed(""), None);
}

#[test]
fn param1_is_not_param10() {
    let xml = "<EventID>307</EventID><EventRecordID>1</EventRecordID><TimeCreated SystemTime='2024-01-01T00:00:00Z'/><DocumentPrinted><Param10>ten</Param10><Param2>doc</Param2><Param8>3</Param8></DocumentPrinted>";
    let job = parse_printed(xml).unwrap();
    assert_eq!((job.document.as_str(), job.pages), ("doc", 3));
    assert_eq!(job.at_us, 1_704_067_200_000_000);
}

#[test]
fn system_times_are_parsed_to_the_microsecond() {
    assert_eq!(parse_system_time("1970-01-01T00:00:01.5Z"), Some(1_500_000));
    assert_eq!(
        parse_system_time("2024-02-29T23:59:59Z"),
        Some(1_709_251_199_000_000)
    );
    for bad in [
        "2024-13-01T00:00:00Z",
        "2024-01-01T00:00:00",
        "2024-01-01 00:00:00Z",
        "2024-01-01T00:00:00.x1Z",
    ] {
        assert_eq!(parse_system_time(bad), None, "{bad}");
    }
}

#[test]
fn the_query_asks_for_jobs_after_the_last_one() {
    assert_eq!(
        query_after(41),
        "*[System[(EventID=307) and (EventRecordID>41)]]"
    );
}
