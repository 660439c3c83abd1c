//! The smallest Tauri app: one window titled "callinvite-hello" showing a
//! static page. `scripts/measure-app.sh` starts it beside the real app to
//! tell the app's own start-up cost from Tauri's and WebKit's.

fn main() {
    if let Err(e) = tauri::Builder::default()
        .setup(|app| {
            tauri::WebviewWindowBuilder::new(app, "main", tauri::WebviewUrl::default())
                .title("callinvite-hello")
                .inner_size(420.0, 640.0)
                .build()?;
            Ok(())
        })
        .run(tauri::generate_context!())
    {
        eprintln!("callinvite-hello: {e}");
        std::process::exit(1);
    }
}
